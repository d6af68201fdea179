// Every failure the fuzzer (test/fuzz/properties.ts, bench/fuzz.ts) found,
// pinned by name with its shrunk counterexample.
import t from 'tap';
import { imageToDumpEntries } from '../../src/composefs/reader.js';
import { writeImage } from '../../src/composefs/writer.js';
import { InvalidManifestError } from '../../src/manifest/errors.js';
import { validateManifest } from '../../src/manifest/load.js';
import type { Entry, Manifest } from '../../src/schema/types.generated.js';
import { mutate, toManifest, type TreeInput } from './properties.js';

const t0 = { sec: 1700000000, nsec: 0 };
const root: Entry = { path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: t0 };
const zeros = (n: number) => Buffer.alloc(n).toString('base64');

t.test('image-mutation, seed 7: a root nid naming a whiteout inode is an InvalidManifestError, not a TypeError', async (t) => {
  // Shrunk counterexample: a root-only image with 31 bytes cut out and one bit flipped,
  // so that the superblock's root nid points at one of the 256 store whiteouts.
  const input: TreeInput = { root: { mode: 0, uid: 0, gid: 65536, mtime: { sec: 137438953472, nsec: 0 }, xattrs: [] }, children: [], links: [false] };
  const image = mutate(writeImage(toManifest(input)), [
    { at: 1593385999, kind: 'delete', byte: 0, bit: 0, len: 31 },
    { at: 8, kind: 'flip', byte: 0, bit: 0, len: 1 },
  ]);
  const err = t.throws(() => imageToDumpEntries(image)) as Error;
  t.type(err, InvalidManifestError);
  t.match(err.message, /the root inode \(nid \d+\) is not a directory/);
});

t.test('validation, seed 7: xattrs that leave no room for the ones the image adds are refused by validation, not by the writer', async (t) => {
  const file = (value: number, extra: object = {}): Entry =>
    ({ path: '/a', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: t0, size: 4096, xattrs: [{ key: 'user.a', value: zeros(value) }], ...extra }) as Entry;
  const m = (...entries: Entry[]): Manifest => ({ version: 1, entries: [root, ...entries] });
  // 12 + (7 + 6 + V) of its own, then the metacopy: 7 + 24 + 36 with a digest.
  const digest = { digest: 'a'.repeat(64) };
  const fits = m(file(32767 - 12 - 13 - 67, digest));
  t.doesNotThrow(() => validateManifest(fits), 'exactly the budget: accepted');
  t.ok(writeImage(fits).length > 0, 'and built');
  const cases: Array<[string, Manifest, string, RegExp]> = [
    ['metacopy', m(file(32767 - 12 - 13 - 67 + 1, digest)), '/entries/1/xattrs', /no room for the trusted\.overlay\.metacopy xattr the image adds: the xattrs would take 32768 bytes/],
    // The shape of the shrunk counterexample: an external file with a backing path, whose redirect tips it over.
    ['redirect', m(file(32767 - 12 - 13 - 31 - 32, { backing: 'x' })), '/entries/1/xattrs', /trusted\.overlay\.redirect/],
    ['whiteout', m({ path: '/w', type: 'whiteout', mode: 0, uid: 0, gid: 0, mtime: t0, xattrs: [{ key: 'user.a', value: zeros(32740) }] }), '/entries/1/xattrs', /trusted\.overlay\.overlay\.whiteout/],
    ['directory of a whiteout', m({ path: '/d', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: t0, xattrs: [{ key: 'user.a', value: zeros(32720) }] }, { path: '/d/w', type: 'whiteout', mode: 0, uid: 0, gid: 0, mtime: t0 }), '/entries/1/xattrs', /whiteouts/],
    ['root opaque mark', { version: 1, entries: [{ ...root, xattrs: [{ key: 'user.a', value: zeros(32740) }] }] }, '/entries/0/xattrs', /trusted\.overlay\.opaque/],
  ];
  for (const [what, manifest, pointer, message] of cases) {
    const err = t.throws(() => validateManifest(manifest), `${what}: refused by validation`) as InvalidManifestError;
    t.equal(err.pointer, pointer, `${what}: pointer`);
    t.match(err.detail, message, `${what}: message`);
  }
  // A user xattr the image replaces (user.overlay.whiteout on a whiteout) is counted as the writer counts it.
  const replaced = m({ path: '/w', type: 'whiteout', mode: 0, uid: 0, gid: 0, mtime: t0, xattrs: [{ key: 'user.overlay.whiteout', value: zeros(100) }, { key: 'user.b', value: zeros(32767 - 12 - 28 - 100 - 13 - 39) }] });
  t.doesNotThrow(() => validateManifest(replaced), 'validation accepts what fits once replaced');
  t.doesNotThrow(() => writeImage(replaced), 'and the writer agrees');
});
