// Names are the bytes the kernel sees (issue 7, finding 8): every manifest
// value that becomes bytes in the image is validated as those bytes, ordered
// and compared as bytes everywhere (validation, writer, dump converter,
// reader), a lone UTF-16 surrogate is refused at its JSON pointer, and
// {"base64": ...} carries any byte string losslessly through dump -> manifest
// -> dump and into the image.
import t from 'tap';
import { manifestFromDumpText, manifestToDump } from '../../src/composefs/convert.js';
import { parseDump, serializeDump } from '../../src/composefs/dump.js';
import { imageToDumpEntries, imageToManifest, readImage } from '../../src/composefs/reader.js';
import { writeImage } from '../../src/composefs/writer.js';
import { InvalidManifestError } from '../../src/manifest/errors.js';
import { parseManifest, validateManifest } from '../../src/manifest/load.js';
import { comparePaths } from '../../src/manifest/paths.js';
import type { Entry, Manifest } from '../../src/schema/types.generated.js';

const t0 = { sec: 1700000000, nsec: 0 };
const attrs = { mode: 0o644, uid: 0, gid: 0, mtime: t0 };
const root: Entry = { path: '/', type: 'dir', ...attrs, mode: 0o755 };
const file = (path: Entry['path'], extra: object = {}): Entry => ({ path, type: 'file', ...attrs, size: 0, ...extra }) as Entry;
const bytes = (...b: number[]) => ({ base64: Buffer.from(b).toString('base64') });
const utf8Bytes = (s: string) => ({ base64: Buffer.from(s, 'utf8').toString('base64') });
const manifestOf = (...entries: Entry[]): Manifest => ({ version: 1, entries: [root, ...entries] });

/** The manifest an image reads back as, without the directory sizes the reader adds. */
function readBack(image: Buffer): Manifest {
  const m = imageToManifest(image);
  for (const e of m.entries) if (e.type === 'dir') delete e.size;
  return m;
}

function refusal(value: unknown): InvalidManifestError {
  try {
    validateManifest(value);
  } catch (err) {
    if (err instanceof InvalidManifestError) return err;
    throw err;
  }
  throw new Error('accepted');
}

/** A character above U+FFFF against one in U+E000..U+FFFF: UTF-16 order says the first is smaller, UTF-8 bytes the opposite. */
const HIGH = '\u{1f600}'; // F0 9F 98 80; UTF-16 D83D DE00
const PRIVATE = '\ue000'; // EE 80 80
const FULLWIDTH = '\uff5e'; // EF BD 9E

t.test('the two orders really differ for these names', async (t) => {
  t.ok(HIGH < PRIVATE, 'UTF-16 code units put U+1F600 first');
  t.ok(Buffer.compare(Buffer.from(PRIVATE), Buffer.from(HIGH)) < 0, 'UTF-8 bytes put U+E000 first');
  t.ok(Buffer.compare(Buffer.from(FULLWIDTH), Buffer.from(HIGH)) < 0, 'and U+FF5E too');
});

t.test('lone surrogates are refused, naming the JSON pointer of the field', async (t) => {
  const cases: Array<[string, Manifest, string]> = [
    ['path', manifestOf(file('/a\ud800')), '/entries/1/path'],
    ['path (low surrogate after an emoji)', manifestOf(file(`/${HIGH}\ude00`)), '/entries/1/path'],
    ['symlink target', manifestOf({ path: '/l', type: 'symlink', ...attrs, target: 'x\udc00y' }), '/entries/1/target'],
    ['hardlink target', manifestOf(file('/a'), { path: '/b', type: 'hardlink', target: '/a\ud83d' }), '/entries/2/target'],
    ['backing path', manifestOf(file('/a', { size: 9, digest: 'a'.repeat(64), backing: 'aa/\udfff' })), '/entries/1/backing'],
    ['xattr key', manifestOf(file('/a', { xattrs: [{ key: 'user.ok', value: '' }, { key: 'user.\ud800', value: '' }] })), '/entries/1/xattrs/1/key'],
    ['image name', { ...manifestOf(), name: 'img\ud800' }, '/name'],
  ];
  for (const [what, manifest, pointer] of cases) {
    const err = refusal(manifest);
    t.equal(err.pointer, pointer, `${what}: pointer`);
    t.match(err.detail, /lone UTF-16 surrogate \(\\u[0-9A-F]{4} at index \d+\)/, `${what}: says why`);
    t.throws(() => writeImage(manifest), { pointer }, `${what}: the writer refuses it too`);
  }
});

t.test('finding 8: two names that used to become one U+FFFD name are refused, not merged', async (t) => {
  const err = refusal(manifestOf(file('/\ud800'), file('/\ud801')));
  t.equal(err.pointer, '/entries/1/path');
});

t.test('manifest order is byte order: U+E000..U+FFFF before characters above U+FFFF', async (t) => {
  const ok = manifestOf(file(`/${PRIVATE}`), file(`/${FULLWIDTH}`), file(`/${HIGH}`));
  t.doesNotThrow(() => validateManifest(ok));
  const err = refusal(manifestOf(file(`/${HIGH}`), file(`/${PRIVATE}`)));
  t.equal(err.pointer, '/entries/2/path');
  t.match(err.detail, /not sorted/);
  t.ok(comparePaths(`/${PRIVATE}`, `/${HIGH}`) < 0);
  t.ok(comparePaths(`/${HIGH}/x`, `/${HIGH}x`) < 0, 'component order: "/" is lowest');
  t.ok(comparePaths(bytes(0x2f, 0xff), `/${HIGH}`) > 0, 'bytes against text: 0xff after every UTF-8 lead byte');
  t.equal(comparePaths(utf8Bytes(`/${HIGH}`), `/${HIGH}`), 0, 'the two spellings of one name are equal');
});

t.test('the writer, the reader and the dump converter all use byte order', async (t) => {
  const names = [`/${PRIVATE}`, `/${FULLWIDTH}`, `/${HIGH}`, `/${HIGH}/in`];
  const manifest = manifestOf({ ...file(names[0]!) }, file(names[1]!), { path: names[2]!, type: 'dir', ...attrs, mode: 0o755 }, file(names[3]!));
  const image = writeImage(manifest);
  // Directory entries in the image, in the order the kernel binary-searches them.
  const listed = readImage(image).children.map((c) => c.name.toString('utf8'));
  const wanted = [PRIVATE, FULLWIDTH, HIGH].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const inRoot = listed.filter((n) => wanted.includes(n));
  t.same(inRoot, wanted, 'the root directory lists them in byte order');
  t.same(readBack(image), manifest, 'image -> manifest gives the same manifest back');
  // A dump listing them in UTF-16 order converts to byte order.
  const dump = serializeDump(manifestToDump(manifest));
  const lines = dump.toString('latin1').trimEnd().split('\n');
  const shuffled = Buffer.from([lines[0], lines[3], lines[4], lines[1], lines[2]].join('\n') + '\n', 'latin1');
  t.same(manifestFromDumpText(shuffled), manifest, 'dump -> manifest sorts by bytes');
});

t.test('names that are not UTF-8: {"base64"} in the manifest, exact bytes in the dump and the image', async (t) => {
  const manifest = manifestOf(
    file('/a'),
    { path: bytes(0x2f, 0xff, 0xfe), type: 'dir', ...attrs, mode: 0o755, xattrs: [{ key: bytes(...Buffer.from('user.\xff', 'latin1')), value: 'eA==' }] },
    { path: bytes(0x2f, 0xff, 0xfe, 0x2f, 0x80), type: 'symlink', ...attrs, target: bytes(0xc0, 0xaf) },
    { path: bytes(0x2f, 0xff, 0xfe, 0x2f, 0x81), type: 'hardlink', target: '/a' },
    file(bytes(0x2f, 0xff, 0xff), { size: 5000, digest: 'b'.repeat(64), backing: bytes(0x62, 0x62, 0x2f, 0xfe) }),
  );
  t.doesNotThrow(() => validateManifest(manifest));
  const dump = serializeDump(manifestToDump(manifest)).toString('latin1');
  t.match(dump, /^\/\\xff\\xfe 0 40755 /m, 'the dump escapes the path bytes');
  t.match(dump, /^\/\\xff\\xfe\/\\x80 2 120644 1 0 0 0 1700000000\.0 \\xc0\\xaf - -$/m, 'and the symlink target');
  t.match(dump, /^\/\\xff\\xfe\/\\x81 0 @100644 2 0 0 0 1700000000\.0 \/a - -$/m, 'a hardlink under a byte name');
  t.match(dump, / user\.\\xff=x$/m, 'and the xattr key');
  t.match(dump, / bb\/\\xfe - b{64}$/m, 'and the backing path');
  const back = manifestFromDumpText(Buffer.from(dump, 'latin1'));
  t.same(back, manifest, 'dump -> manifest gives the same manifest');
  t.equal(serializeDump(manifestToDump(back)).toString('latin1'), dump, 'and manifest -> dump the same dump');
  const image = writeImage(manifest);
  const entries = imageToDumpEntries(image);
  const paths = entries.map((e) => e.path.toString('hex'));
  t.ok(paths.includes('2ffffe2f80') && paths.includes('2ffffe') && paths.includes('2fffff'), 'the image holds the exact bytes');
  t.same(readBack(image), manifest, 'the reader gives the same manifest back');
});

t.test('a name spelled as bytes is the same name as its UTF-8 string', async (t) => {
  const err = refusal(manifestOf(file('/é'), file(utf8Bytes('/é'))));
  t.equal(err.pointer, '/entries/2/path');
  t.match(err.detail, /path "\/é" appears twice/);
  const dupKey = refusal(manifestOf(file('/a', { xattrs: [{ key: 'user.é', value: '' }, { key: utf8Bytes('user.é'), value: '' }] })));
  t.equal(dupKey.pointer, '/entries/1/xattrs/1/key');
  t.match(dupKey.detail, /appears twice/);
  // A hardlink may name its target in either spelling.
  t.doesNotThrow(() => validateManifest(manifestOf({ path: '/a', type: 'hardlink', target: utf8Bytes('/é') }, file('/é'))));
  // Either spelling gives the same image.
  const asText = manifestOf({ path: '/d', type: 'dir', ...attrs, mode: 0o755 }, { path: '/d/é', type: 'symlink', ...attrs, target: '日本', xattrs: [{ key: 'user.k', value: 'eQ==' }] });
  const asBytes = manifestOf(
    { path: utf8Bytes('/d'), type: 'dir', ...attrs, mode: 0o755 },
    { path: utf8Bytes('/d/é'), type: 'symlink', ...attrs, target: utf8Bytes('日本'), xattrs: [{ key: utf8Bytes('user.k'), value: 'eQ==' }] },
  );
  t.ok(writeImage(asBytes).equals(writeImage(asText)), 'same image bytes');
  // The converter writes the plain string whenever the bytes are UTF-8.
  t.same(manifestFromDumpText(serializeDump(manifestToDump(asBytes))), asText);
});

t.test('bytes are held to the rules of text', async (t) => {
  const cases: Array<[Manifest, string, RegExp]> = [
    [manifestOf(file({ base64: 'L/9=' })), '/entries/1/path/base64', /canonical base64/],
    [manifestOf(file(bytes(0x2f, 0x61, 0x00))), '/entries/1/path', /NUL/],
    [manifestOf(file(bytes(0x61))), '/entries/1/path', /not absolute/],
    [manifestOf(file(bytes(0x2f, 0x2e, 0x2e))), '/entries/1/path', /"\.\."/],
    [manifestOf(file(bytes(0x2f, ...Array(256).fill(0xff)))), '/entries/1/path', /is 256 bytes long, at most 255/],
    [manifestOf({ path: '/l', type: 'symlink', ...attrs, target: bytes() }), '/entries/1/target', /empty/],
    [manifestOf({ path: '/l', type: 'symlink', ...attrs, target: bytes(...Array(4096).fill(0xfe)) }), '/entries/1/target', /4096 bytes long, at most 4095/],
    [manifestOf(file('/a', { xattrs: [{ key: bytes(), value: '' }] })), '/entries/1/xattrs/0/key', /empty/],
    [manifestOf(file('/a'), { path: '/b', type: 'hardlink', target: bytes(0x2f, 0xff) }), '/entries/2/target', /hardlink target "\/\\xff" is not in the manifest/],
    [manifestOf(file(bytes(0x2f, 0xff)), file(bytes(0x2f, 0xfe))), '/entries/2/path', /not sorted by path: "\/\\xfe" must come before "\/\\xff"/],
  ];
  for (const [manifest, pointer, message] of cases) {
    const err = refusal(manifest);
    t.equal(err.pointer, pointer, `${pointer}: ${message}`);
    t.match(err.detail, message);
  }
});

t.test('the schema: text or bytes, with one message for a value of neither type', async (t) => {
  const err = refusal(manifestOf(file(5 as unknown as string)));
  t.equal(err.pointer, '/entries/1/path');
  t.equal(err.detail, 'must be of type string or object');
  const extra = refusal(manifestOf(file({ base64: 'Lw==', hex: '2f' } as unknown as string)));
  t.equal(extra.pointer, '/entries/1/path');
  t.match(extra.detail, /unknown field "hex"/);
  // JSON text with a lone surrogate escape parses to such a string, and is refused the same way.
  const text = JSON.stringify(manifestOf()).replace(']', ',{"path":"/\\udc00","type":"file","mode":0,"uid":0,"gid":0,"mtime":{"sec":0,"nsec":0},"size":0}]');
  t.throws(() => parseManifest(text), { pointer: '/entries/1/path' });
});

t.test('the dump format escapes any byte of a name, and parses back to it', async (t) => {
  const all = Buffer.from(Array.from({ length: 255 }, (_, i) => i + 1).filter((b) => b !== 0x2f));
  const line = { path: Buffer.concat([Buffer.from('/'), all]), size: 0n, mode: 0o100644, hardlink: false, nlink: 1, uid: 0, gid: 0, rdev: 0, mtimeSec: 0n, mtimeNsec: 0, payload: null, content: null, digest: null, xattrs: [] };
  const text = serializeDump([line]);
  t.ok(text.every((c) => c >= 0x21 && c <= 0x7e || c === 0x20 || c === 0x0a), 'the dump text is printable ASCII');
  t.ok(parseDump(text)[0]!.path.equals(line.path), 'and gives the bytes back');
});

t.test('the reader: a directory holding a name twice is refused; names out of order come back in byte order', async (t) => {
  const image = writeImage(manifestOf(file('/qq1-name'), file('/qq2-name')));
  const at = (name: string) => {
    const i = image.indexOf(Buffer.from(name));
    t.ok(i > 0 && image.indexOf(Buffer.from(name), i + 1) < 0, `${name} appears once in the image`);
    return i;
  };
  const twice = Buffer.from(image);
  twice[at('qq2-name') + 2] = 0x31; // qq2-name -> qq1-name
  t.throws(() => imageToManifest(twice), { name: 'InvalidManifestError', message: /path "\/qq1-name" appears twice/ });
  const unsorted = Buffer.from(image);
  unsorted[at('qq1-name') + 2] = 0x33; // qq1-name -> qq3-name, now listed before qq2-name
  t.same(readBack(unsorted).entries.map((e) => e.path), ['/', '/qq2-name', '/qq3-name']);
});

t.test('manifest bytes that are not UTF-8 are refused, not decoded to U+FFFD', async (t) => {
  const text = Buffer.from(JSON.stringify(manifestOf(file('/caf\u00e9'))));
  const latin1 = Buffer.from(text.toString('utf8').replace('caf\u00e9', 'caf\u00e9'), 'latin1'); // é as the single byte 0xe9
  t.ok(!latin1.equals(text) && latin1.includes(0xe9));
  t.doesNotThrow(() => parseManifest(text));
  t.throws(() => parseManifest(latin1), { pointer: '(document)', message: /is not valid UTF-8.*\{"base64"/ });
});

t.test('dump text given as a string with a lone surrogate is refused at its line', async (t) => {
  const text = '/ 4096 40755 2 0 0 0 0.0 - - -\n/a\ud800 0 100644 1 0 0 0 0.0 - - -\n';
  t.throws(() => parseDump(text), { pointer: 'line 2', message: /lone UTF-16 surrogate \(\\uD800\)/ });
  t.throws(() => manifestFromDumpText(text), { pointer: 'line 2' });
});
