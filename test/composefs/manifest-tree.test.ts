// The entry-by-entry manifest path (src/composefs/manifest-tree.ts) against
// the whole-manifest path it stands in for (parseManifestText, then the
// writer): on generated manifests in several layouts of their JSON text, the
// same texts mutated byte by byte, and hand-made refusals whose order matters.
// What it takes, the whole path takes too and writes to the same bytes; what
// it gives up on, manifestTextTree hands to the whole path, so every refusal
// keeps the whole path's words.
import t from 'tap';
import fc from 'fast-check';
import { streamedManifestTree, manifestTextTree } from '../../src/composefs/manifest-tree.js';
import { writeCheckedImage, writeTree } from '../../src/composefs/writer.js';
import { manifestJson } from '../../src/manifest/format.js';
import { scanManifest } from '../../src/manifest/scan.js';
import { InvalidManifestError } from '../../src/manifest/errors.js';
import { manifestText, parseManifestText } from '../../src/manifest/load.js';
import { codecFor, UTF8_TEXT } from '../../src/manifest/text.js';
import type { Manifest } from '../../src/schema/types.generated.js';
import { asText, mutate, toManifest, treeInput } from '../fuzz/properties.js';

type Outcome = { image: Buffer } | { refusal: string };

function outcome(build: () => Buffer): Outcome {
  try {
    return { image: build() };
  } catch (err) {
    if (!(err instanceof InvalidManifestError)) throw err;
    return { refusal: err.message };
  }
}

/** The texts a manifest may come as: one entry a line (as mountgate writes it, for people and for the broker: manifestJson), compact (JSON.stringify's single line), indented, members reordered with CRLF. */
function layouts(m: Manifest): string[] {
  const reordered = `{\r\n"entries" :\r\n[ ${m.entries.map((e) => JSON.stringify(e)).join(' ,\r\n')} ] ,\t"version":1${m.name === undefined ? '' : `, "name": ${JSON.stringify(m.name)}`} }\r\n`;
  return [manifestJson(m), JSON.stringify(m), JSON.stringify(m, null, 2), reordered];
}

const counts = { streamed: 0, handedOver: 0, refused: 0 };

/** Both paths on one text, at format versions 0 and 1: the same image, or the same refusal; whether it was streamed at both. */
function agree(bytes: Buffer): boolean {
  let streamedBoth = true;
  for (const minVersion of [0, 1]) {
    const options = { minVersion, maxVersion: 1 };
    const whole = outcome(() => writeCheckedImage(parseManifestText(manifestText(bytes)), options));
    const json = outcome(() => Buffer.from(manifestText(bytes), 'latin1'));
    const streamed = 'image' in json ? streamedManifestTree(json.image.toString('latin1'), () => options) : undefined;
    const show = () => `format ${minVersion}:\n${bytes.toString('utf8').slice(0, 2000)}`;
    if (streamed !== undefined) {
      counts.streamed++;
      if (!('image' in whole)) throw new Error(`the streamed path took a manifest the whole path refuses (${whole.refusal}), ${show()}`);
      if (!writeTree(streamed).equals(whole.image)) throw new Error(`the streamed path wrote other bytes, ${show()}`);
    } else {
      counts.handedOver++;
      streamedBoth = false;
    }
    if ('refusal' in whole) counts.refused++;
    const viaText = outcome(() => writeTree(manifestTextTree(manifestText(bytes), options)));
    if (JSON.stringify(viaText) !== JSON.stringify(whole)) throw new Error(`manifestTextTree says ${'image' in viaText ? 'an image' : viaText.refusal}, the whole path ${'image' in whole ? 'an image' : whole.refusal}, ${show()}`);
  }
  return streamedBoth;
}

t.test('generated manifests as text, in every layout: streamed, to the whole path\'s bytes', async (t) => {
  let fits = 0;
  fc.assert(fc.property(treeInput, (input) => {
    const m = asText(toManifest(input));
    if (codecFor(m.entries) !== UTF8_TEXT) throw new Error('not all text');
    // A name of 128 bytes or more may be too long once each byte above 0x7f takes two: the whole path refuses it.
    const refused = outcome(() => writeCheckedImage(parseManifestText(JSON.stringify(m)))).hasOwnProperty('refusal');
    if (!refused) fits++;
    for (const text of layouts(m)) if (agree(Buffer.from(text)) === refused) throw new Error(`streamed ${refused}: ${text.slice(0, 2000)}`);
  }), { numRuns: 150, seed: 21 });
  t.ok(fits >= 60, `${fits} of 150 built, each streamed in every layout`);
});

t.test('values given as {"base64"}: handed to the whole path, which builds them', async (t) => {
  const before = counts.handedOver;
  fc.assert(fc.property(treeInput, (input) => {
    agree(Buffer.from(manifestJson(toManifest(input, true))));
  }), { numRuns: 50, seed: 22 });
  t.equal(counts.handedOver - before, 100);
});

const mutation = fc.record({ at: fc.nat(), kind: fc.constantFrom('flip', 'set', 'insert', 'delete', 'repeat'), byte: fc.constantFrom(0x00, 0x0a, 0x20, 0x22, 0x2c, 0x2f, 0x3a, 0x5b, 0x5c, 0x5d, 0x7b, 0x7d, 0x30, 0x39, 0x65, 0x80, 0xff), bit: fc.integer({ min: 0, max: 7 }), len: fc.integer({ min: 1, max: 64 }) });

t.test('mutated texts: streamed only when the whole path takes them, refused in its words', async (t) => {
  fc.assert(fc.property(treeInput, fc.nat(3), fc.array(mutation, { minLength: 1, maxLength: 4 }), (input, layout, list) => {
    agree(mutate(Buffer.from(layouts(toManifest(input))[layout]!), list));
  }), { numRuns: 400, seed: 23 });
  t.pass(`streamed ${counts.streamed}, handed over ${counts.handedOver}, refused ${counts.refused}`);
});

const root = { path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: { sec: 1, nsec: 0 } };
const file = (path: string, extra: object = {}) => ({ path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: { sec: 1, nsec: 0 }, size: 0, ...extra });

t.test('the whole path\'s order of refusals: the schema\'s before the checks\', the manifest\'s before the options\'', async (t) => {
  const refusal = (doc: object, options: object = {}) => outcome(() => writeTree(manifestTextTree(JSON.stringify(doc), options)));
  // Unsorted at entry 2, a schema problem at entry 3: the schema's is reported.
  t.same(refusal({ version: 1, entries: [root, file('/b'), file('/a'), file('/c', { mode: -1 })] }), { refusal: '/entries/3/mode: must be >= 0' });
  t.same(refusal({ version: 1, entries: [root, file('/b'), file('/a')] }), refusal({ version: 1, entries: [root, file('/b'), file('/a')] }));
  t.match(refusal({ version: 1, entries: [root, file('/b'), file('/a')] }), { refusal: /^\/entries\/2\/path: entries are not sorted/ });
  // A document member after the entries still counts.
  t.match(refusal({ entries: [root], version: 2 }), { refusal: /^\/version: / });
  t.match(refusal({ version: 1, entries: [root, { path: '/l', type: 'hardlink', target: '/nowhere' }] }), { refusal: '/entries/1/target: hardlink target "/nowhere" is not in the manifest' });
  t.match(refusal({ version: 1, entries: [root, file('/a', { mode: 1 << 20 })] }, { minVersion: 7 }), { refusal: /^\/entries\/1\/mode: / });
  t.match(refusal({ version: 1, entries: [root] }, { minVersion: 7 }), { refusal: /^\(options\): minimum format version 7/ });
  t.match(outcome(() => writeTree(manifestTextTree('{"version": 1, "entries": [' + JSON.stringify(root) + ',]}'))), { refusal: /^\(document\): is not valid JSON/ });
});

t.test('hardlinks, before and after their targets, are resolved in the tree', async (t) => {
  const doc = { version: 1, entries: [root, { path: '/a', type: 'hardlink', target: '/d/f' }, { ...root, path: '/d' }, file('/d/f', { size: 3, inline: 'YWJj' }), { path: '/d/g', type: 'hardlink', target: '/d/f' }] };
  const text = JSON.stringify(doc);
  const streamed = streamedManifestTree(text, () => ({}));
  t.ok(streamed, 'streamed');
  t.ok(writeTree(streamed!).equals(writeCheckedImage(parseManifestText(text))), 'the same bytes');
  t.equal(streamed!.inodes.find((n) => n.name === 'f')!.nlink, 3);
  for (const target of ['/d', '/a', '/d/', '/d//f', '/e/f']) {
    const bad = JSON.stringify({ ...doc, entries: doc.entries.map((e, i) => (i === 1 ? { ...e, target } : e)) });
    t.equal(streamedManifestTree(bad, () => ({})), undefined, `a hardlink to ${target} is handed over`);
  }
});

t.test('an entry that goes on past the end of its line: found by its brackets, or handed over', async (t) => {
  const x = file('/a', { xattrs: [{ key: 'user.a', value: '' }, { key: 'user.b', value: 'eA==' }] });
  const text = (entry: string) => `{"version": 1, "entries": [\n${JSON.stringify(root)},\n${entry}\n]}\n`;
  // The line ends in "}" but the next one does not begin an entry: the brackets are counted.
  const counted = text(JSON.stringify(x).replace('},{', '}\n,{'));
  t.ok(streamedManifestTree(counted, () => ({})), 'streamed');
  // The line ends in "}" and the next begins with "]": taken for the whole entry, which then does not parse.
  const cut = text(JSON.stringify(x).replace('}]', '}\n]'));
  t.equal(streamedManifestTree(cut, () => ({})), undefined, 'handed over');
  for (const json of [counted, cut]) t.ok(writeTree(manifestTextTree(json)).equals(writeCheckedImage(parseManifestText(json))), 'the whole path\'s bytes');
});

t.test('a manifest on one line (JSON.stringify\'s) is scanned in one pass: the newline is searched for once, not once per entry to the end of the text', async (t) => {
  const entries: Manifest['entries'] = [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: { sec: 1, nsec: 0 } }];
  for (let i = 0; i < 2000; i++) entries.push({ path: `/d${String(i).padStart(5, '0')}`, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: { sec: 1, nsec: 0 } });
  const m: Manifest = { version: 1, name: 'flat', keptFor: 'a'.repeat(64), entries };
  const searches = (text: string) => {
    const indexOf = String.prototype.indexOf;
    let newlineSearches = 0;
    String.prototype.indexOf = function (this: string, search: string, from?: number) {
      if (search === '\n') newlineSearches++;
      return indexOf.call(this, search, from);
    };
    try {
      const layout = scanManifest(text);
      t.equal(layout?.count, entries.length, 'every entry found');
    } finally {
      String.prototype.indexOf = indexOf;
    }
    return newlineSearches;
  };
  t.equal(searches(JSON.stringify(m)), 1, 'one line: one search');
  const lined = manifestJson(m);
  const lines = lined.split('\n').length;
  const n = searches(lined);
  t.ok(n >= entries.length && n <= lines, `one entry a line (as the client sends it): at most one search a line (${n} for ${lines} lines)`);
  t.same(JSON.parse(manifestJson(m)), m, 'manifestJson keeps every member (keptFor too) and every entry');
});
