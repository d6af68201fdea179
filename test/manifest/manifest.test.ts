// Manifests: the example documents under fixtures/ (valid ones load, convert
// to a dump and back unchanged, and build an image; invalid ones are refused
// with the pointer and message expected), the limits agree with the schema,
// and path order is component order.
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { manifestFromDumpText, manifestToDump } from '../../src/composefs/convert.js';
import { serializeDump } from '../../src/composefs/dump.js';
import { writeImage } from '../../src/composefs/writer.js';
import { InvalidManifestError } from '../../src/manifest/errors.js';
import * as limits from '../../src/manifest/limits.js';
import { parseManifest } from '../../src/manifest/load.js';
import { comparePaths, normalizeLookupPath, pathProblem } from '../../src/manifest/paths.js';
import { InvalidRequestError } from '../../src/errors.js';

const fixtures = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');
const read = (...p: string[]) => readFileSync(join(fixtures, ...p));

for (const file of readdirSync(join(fixtures, 'valid')).sort()) {
  t.test(`valid/${file} loads, round-trips through a dump and builds`, async (t) => {
    const manifest = parseManifest(read('valid', file));
    const dump = serializeDump(manifestToDump(manifest));
    const back = manifestFromDumpText(dump, manifest.name ? { name: manifest.name } : {});
    t.same(back, manifest, 'manifest -> dump -> manifest');
    t.ok(writeImage(manifest).length > 0);
  });
}

const expected = JSON.parse(read('invalid', 'expected.json').toString()) as Record<string, { pointer: string; message: string }>;
for (const file of readdirSync(join(fixtures, 'invalid')).sort()) {
  if (file === 'expected.json') continue;
  t.test(`invalid/${file} is refused`, async (t) => {
    const want = expected[file];
    t.ok(want, 'expected.json says what to expect');
    const err = t.throws(() => parseManifest(read('invalid', file))) as InvalidManifestError;
    t.type(err, InvalidManifestError);
    t.type(err, InvalidRequestError, 'maps to the InvalidRequest bus error');
    if (want) {
      t.equal(err.pointer, want.pointer);
      t.match(err.detail, want.message);
    }
  });
}

t.test('invalid JSON and oversized documents are refused before parsing', async (t) => {
  t.throws(() => parseManifest('{'), /not valid JSON/);
  t.throws(() => parseManifest(Buffer.alloc(limits.MAX_MANIFEST_BYTES + 1, 0x20)), /at most 500000000/);
});

t.test('UTF-8 bytes parse as their text does (held as one byte a character, escaped), and bytes that are not UTF-8 are refused', async (t) => {
  // Enough of them that the text is decoded in several pieces.
  const names = ['\u00ff\u0100', 'snow \u2603', 'quote " and \\ backslash'];
  for (let i = 0; i < 3000; i++) names.push(`caf\u00e9 ${i}`, `emoji \u{1f600} ${i}`, `plain ${i}`);
  const text = JSON.stringify({
    version: 1,
    entries: [
      { path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 } },
      ...names.sort((a, b) => comparePaths(`/${a}`, `/${b}`)).map((n) => ({ path: `/${n}`, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 }, size: 0 })),
    ],
  });
  const fromBytes = parseManifest(Buffer.from(text, 'utf8'));
  t.same(fromBytes, parseManifest(text));
  t.same(fromBytes.entries.map((e) => e.path), ['/', ...names.map((n) => `/${n}`)]);
  t.ok(text.length > 3 * 64 * 1024);
  t.same(writeImage(fromBytes), writeImage(parseManifest(text)));
  t.throws(() => parseManifest(Buffer.from([0x7b, 0xff, 0x7d])), /not valid UTF-8/);
});

t.test('the limits agree with the schema', async (t) => {
  const schema = JSON.parse(readFileSync(join(fixtures, '../../../schemas/manifest.schema.json'), 'utf8'));
  t.equal(schema.properties.entries.maxItems, limits.MAX_ENTRIES);
  t.equal(schema.$defs.fileEntry.properties.size.maximum, limits.MAX_FILE_SIZE);
  // Text or bytes: the limit sits on the text branch; the bytes are measured by checkManifest.
  t.equal(schema.$defs.xattrs.items.properties.key.anyOf[0].maxLength, limits.MAX_XATTR_KEY_BYTES);
  t.equal(schema.$defs.symlinkEntry.properties.target.anyOf[0].maxLength, limits.MAX_SYMLINK_BYTES);
  t.equal(schema.$defs.path.anyOf[0].maxLength, limits.MAX_PATH_BYTES);
});

t.test('paths sort component by component, in UTF-8 byte order', async (t) => {
  const sorted = ['/', '/a', '/a/z', '/a b', '/a-b', '/a.b', '/\uffff', '/\u{1f600}'];
  const shuffled = [...sorted].reverse();
  t.same(shuffled.sort(comparePaths), sorted);
  t.equal(comparePaths('/x', '/x'), 0);
});

t.test('canonical paths', async (t) => {
  t.equal(pathProblem('/'), undefined);
  t.equal(pathProblem('/a/b c'), undefined);
  t.match(pathProblem('a'), /absolute/);
  t.match(pathProblem('/a//b'), /empty name/);
  t.match(pathProblem('/a/'), /ends with/);
  t.match(pathProblem('/a/..'), /"\.\."/);
  t.match(pathProblem('/a\0'), /NUL/);
  t.equal(normalizeLookupPath('usr//bin/'), '/usr/bin');
});
