// Derives src/schema/types.generated.ts from schemas/*.schema.json, so the
// TypeScript types are never written by hand. `--check` fails if the file is stale.
import { readFileSync, writeFileSync, readdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compile } from 'json-schema-to-typescript';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const schemas = join(root, 'schemas');
const out = join(root, 'src/schema/types.generated.ts');
let text = '// Generated from schemas/*.schema.json by scripts/gen-types.mjs: do not edit.\n/* eslint-disable */\n';
const files = readdirSync(schemas).filter((f) => f.endsWith('.schema.json')).sort();
const seen = new Set();
for (const file of files) {
  const schema = JSON.parse(readFileSync(join(schemas, file), 'utf8'));
  let ts = await compile(schema, schema.title, { bannerComment: '', cwd: schemas, declareExternallyReferenced: true, additionalProperties: false, strictIndexSignatures: true, ignoreMinAndMaxItems: true, format: true });
  // Referenced schemas are emitted once, by their own file.
  ts = ts.replace(/export (type|interface) (\w+)[^]*?(?=\nexport |$)/g, (block, _k, name) => {
    if (seen.has(name)) return '';
    seen.add(name);
    return block;
  });
  text += `\n// ${file}\n${ts.trim()}\n`;
}
if (process.argv.includes('--check')) {
  const current = readFileSync(out, 'utf8');
  if (current !== text) { console.error('src/schema/types.generated.ts is stale: run npm run gen-types'); process.exit(1); }
} else {
  writeFileSync(out, text);
}
