// Derives from schemas/*.schema.json, so nothing of them is written by hand:
// src/schema/types.generated.ts, the TypeScript types, and
// src/schema/documents.generated.ts, the schema documents as data (validation
// reads no file at run time, so the pure rooms can validate), and
// src/schema/validate-KIND.generated.ts, each schema's validator compiled
// ahead of time (ajv's standalone code, the same options as at run time), so
// no process compiles a schema when it starts. `--check` fails if any is stale.
import { readFileSync, writeFileSync, readdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compile } from 'json-schema-to-typescript';
import { Ajv2020 } from 'ajv/dist/2020.js';
import standalone from 'ajv/dist/standalone/index.js';

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

// One module per schema: a process loads only the validators it uses.
const outputs = [[out, text], [documentsOut, documents]];
for (const kind of ['manifest', 'bind-request', 'mount-request', 'remove-request', 'policy']) {
  const ajv = new Ajv2020({ strict: true, allErrors: true, allowUnionTypes: false, code: { source: true, esm: true } });
  for (const file of files) ajv.addSchema(JSON.parse(readFileSync(join(schemas, file), 'utf8')));
  let code = standalone.default(ajv, { validate: `https://mountgate.dev/schemas/${kind}.schema.json` });
  // The only runtime helper ajv's code uses, imported the ESM way.
  code = code.replace(/require\("ajv\/dist\/runtime\/ucs2length"\)/g, 'ucs2length');
  if (/require\(/.test(code)) throw new Error(`the ${kind} validator needs a runtime helper gen-types does not import`);
  code = '// Generated from schemas/*.schema.json by scripts/gen-types.mjs (ajv standalone): do not edit.\n'
    + '// @ts-nocheck\n/* eslint-disable */\n'
    + "import ucs2length from 'ajv/dist/runtime/ucs2length.js';\n"
    + `${code.replace(/^"use strict";/, '')}\n`;
  outputs.push([join(root, `src/schema/validate-${kind}.generated.ts`), code]);
}
// The manifest's fast check (src/manifest/load.ts): the document with its
// entries only required to be there, and each entry kind's own schema, by its
// "type", stopping at the first error. That needs kinds told apart by a
// required constant "type"; a schema where they are not fails here.
{
  const schema = JSON.parse(readFileSync(join(schemas, 'manifest.schema.json'), 'utf8'));
  const id = schema.$id.replace(/\.schema\.json$/, '.by-kind.schema.json');
  const kinds = {};
  for (const branch of schema.$defs.entry.oneOf ?? []) {
    const def = /^#\/\$defs\/([A-Za-z]+)$/.exec(branch.$ref ?? '')?.[1];
    const type = def === undefined ? undefined : schema.$defs[def]?.properties?.type?.const;
    if (def === undefined || typeof type !== 'string' || !schema.$defs[def].required?.includes('type') || type in kinds) {
      throw new Error(`manifest.schema.json: the entry branch ${JSON.stringify(branch)} is not told apart by a required constant "type"`);
    }
    kinds[type] = `${id}#/$defs/${def}`;
  }
  const ajv = new Ajv2020({ strict: true, allErrors: false, allowUnionTypes: false, code: { source: true, esm: true } });
  for (const file of files) if (file !== 'manifest.schema.json') ajv.addSchema(JSON.parse(readFileSync(join(schemas, file), 'utf8')));
  ajv.addSchema({ ...schema, $id: id, properties: { ...schema.properties, entries: { ...schema.properties.entries, items: true } } });
  const names = Object.keys(kinds).map((type, i) => [type, `kind${i}`]);
  let code = standalone.default(ajv, { document: id, ...Object.fromEntries(names.map(([type, name]) => [name, kinds[type]])) });
  code = code.replace(/require\("ajv\/dist\/runtime\/ucs2length"\)/g, 'ucs2length');
  if (/require\(/.test(code)) throw new Error('the manifest kind validators need a runtime helper gen-types does not import');
  code = '// Generated from schemas/manifest.schema.json by scripts/gen-types.mjs (ajv standalone): do not edit.\n'
    + '// The fast check of src/manifest/load.ts: `document` (entries left to the kinds) and each entry kind\'s validator by its "type".\n'
    + '// @ts-nocheck\n/* eslint-disable */\n'
    + "import ucs2length from 'ajv/dist/runtime/ucs2length.js';\n"
    + `${code.replace(/^"use strict";/, '')}\n`
    + `export const kinds = new Map([${names.map(([type, name]) => `[${JSON.stringify(type)}, ${name}]`).join(', ')}]);\n`;
  outputs.push([join(root, 'src/schema/validate-manifest-kinds.generated.ts'), code]);
}
if (process.argv.includes('--check')) {
  for (const [file, want] of outputs) {
    const current = readFileSync(file, 'utf8');
    if (current !== want) { console.error(`${file.slice(root.length + 1)} is stale: run npm run gen-types`); process.exit(1); }
  }
} else {
  for (const [file, content] of outputs) writeFileSync(file, content);
}
