// Derives from schemas/*.schema.json, so nothing of them is written by hand:
// src/schema/types.generated.ts, the TypeScript types, and
// src/schema/documents.generated.ts, the schema documents as data (validation
// reads no file at run time, so the pure rooms can validate). `--check` fails
// if either file is stale.
import { readFileSync, writeFileSync, readdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compile } from 'json-schema-to-typescript';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const schemas = join(root, 'schemas');
const out = join(root, 'src/schema/types.generated.ts');
const documentsOut = join(root, 'src/schema/documents.generated.ts');
let text = '// Generated from schemas/*.schema.json by scripts/gen-types.mjs: do not edit.\n/* eslint-disable */\n';
const files = readdirSync(schemas).filter((f) => f.endsWith('.schema.json')).sort();
const seen = new Set();
let documents = '// Generated from schemas/*.schema.json by scripts/gen-types.mjs: do not edit.\n'
  + '// Each schema document by file name, as JSON.parse gives it.\n'
  + '/* eslint-disable */\n'
  + 'export const schemaDocuments: Readonly<Record<string, unknown>> = {\n';
for (const file of files) {
  const schema = JSON.parse(readFileSync(join(schemas, file), 'utf8'));
  documents += `  ${JSON.stringify(file)}: ${JSON.stringify(schema)},\n`;
  let ts = await compile(schema, schema.title, { bannerComment: '', cwd: schemas, declareExternallyReferenced: true, additionalProperties: false, strictIndexSignatures: true, ignoreMinAndMaxItems: true, format: true });
  // Referenced schemas are emitted once, by their own file.
  ts = ts.replace(/export (type|interface) (\w+)[^]*?(?=\nexport |$)/g, (block, _k, name) => {
    if (seen.has(name)) return '';
    seen.add(name);
    return block;
  });
  text += `\n// ${file}\n${ts.trim()}\n`;
}
documents += '};\n';
if (process.argv.includes('--check')) {
  for (const [file, want] of [[out, text], [documentsOut, documents]]) {
    const current = readFileSync(file, 'utf8');
    if (current !== want) { console.error(`${file.slice(root.length + 1)} is stale: run npm run gen-types`); process.exit(1); }
  }
} else {
  writeFileSync(out, text);
  writeFileSync(documentsOut, documents);
}
