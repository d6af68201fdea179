// The writer: snapshots of small hand-written images, fsck.erofs on what we
// write, and a property test over random trees: fsck finds no error and the
// reader gives the same tree back. Byte-identity with mkcomposefs is checked
// by conformance.test.ts, against the digests the composefs project's assets
// carry; nothing outside this repository produced the hashes below.
import t from 'tap';
import fc from 'fast-check';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { imageToManifest } from '../../src/composefs/reader.js';
import { imageTree, writeImage, writeTree, type WriteOptions } from '../../src/composefs/writer.js';
import { validateManifest } from '../../src/manifest/load.js';
import { InvalidManifestError } from '../../src/manifest/errors.js';
import { comparePaths } from '../../src/manifest/paths.js';
import type { Entry, Manifest } from '../../src/schema/types.generated.js';
import { bigDirectory, everyKind, rootOnly } from './trees.js';

const dir = mkdtempSync(join(tmpdir(), 'mountgate-writer-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** fsck.erofs, reading every file; returns its output on failure. */
function fsck(image: Buffer): string | undefined {
  const file = join(dir, 'image.cfs');
  writeFileSync(file, image);
  try {
    execFileSync('fsck.erofs', ['--extract', file], { stdio: 'pipe' });
    return undefined;
  } catch (err) {
    const e = err as { stdout?: Buffer; stderr?: Buffer };
    return `${e.stdout?.toString() ?? ''}${e.stderr?.toString() ?? ''}`;
  }
}

// Snapshots: the sha256 of this writer's own output for each tree, pinned when
// that output was reviewed (fsck.erofs accepts it; the byte-level test below
// reads the root-only one). Not an external reference: they make any change to
// the bytes a visible diff, to be reviewed and re-pinned, never a silent one.
const snapshots: Array<[string, Manifest, WriteOptions, string]> = [
  ['root only', rootOnly, {}, '417b1b32b64942e6385e280ded6f78cd5e758d49a43885f68005d6a16fc5af3a'],
  ['every kind, format 0', everyKind, { maxVersion: 0 }, 'b75a5d17197018c8626c84ded822780b2c5166feb96fa3425b6c029d4b566835'],
  ['every kind, format 1 (whiteouts mark the directory opaque)', everyKind, {}, '671334ab77254a6c2bd050255807e47c51855d9b9b0dd648e2c5361abeaa1880'],
  ['a directory of several blocks', bigDirectory, {}, 'b21dbe68e5b5cd1ae142c002df8fb32b4dca202bbe6931b33722902ef97de1e2'],
];

for (const [name, manifest, options, expected] of snapshots) {
  t.test(`snapshot: ${name}`, async (t) => {
    const image = writeImage(manifest, options);
    t.equal(sha256(image), expected, 'the same bytes as the reviewed snapshot');
    t.equal(fsck(image), undefined, 'fsck.erofs finds no error');
    t.ok(writeImage(manifest, options).equals(image), 'deterministic');
  });
}

t.test('the root-only image, byte by byte where it matters', async (t) => {
  const image = writeImage(rootOnly);
  // Block 0: header, superblock, the root inode and the first whiteouts; block 1:
  // the rest of the 256 whiteout inodes; block 2: their padding; block 3: the
  // root's directory entries (258 entries do not fit the half block a tail may use).
  t.equal(image.length, 4096 * 4, 'four blocks');
  t.equal(image.readUInt32LE(0), 0xd078629a, 'composefs magic');
  t.equal(image.readUInt32LE(1024), 0xe0f5e1e2, 'EROFS magic at 1024');
  t.equal(image.readUInt16LE(1024 + 14), 36, 'root nid: the first slot after the superblock');
  t.equal(Number(image.readBigUInt64LE(1024 + 16)), 257, 'root and the 256 store whiteouts');
});

t.test('a file too large for 1024 chunks is refused', async (t) => {
  const m: Manifest = { version: 1, entries: [...rootOnly.entries, { path: '/big', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 }, size: 2 ** 53 }] };
  t.doesNotThrow(() => writeImage(m), '2^53 bytes is the largest');
  const bad = structuredClone(m);
  (bad.entries[1] as { size: number }).size = 2 ** 53 + 2;
  t.throws(() => writeImage(bad), InvalidManifestError);
});

t.test('unsupported format versions are refused', async (t) => {
  t.throws(() => writeImage(rootOnly, { minVersion: 2 }), /format version 2 is not supported/);
});

t.test('an entry whose xattrs leave no room for the overlay xattrs is refused', async (t) => {
  const value = Buffer.alloc(32767 - 12 - 7 - 6).toString('base64');
  const m: Manifest = {
    version: 1,
    entries: [...rootOnly.entries, { path: '/f', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 }, size: 10, xattrs: [{ key: 'user.x', value }] }],
  };
  t.throws(() => writeImage(m), /no room for the trusted.overlay.metacopy xattr/);
});

// ---- random trees ------------------------------------------------------------

const names = fc.constantFrom('a', 'b', 'c', 'dir', 'file', 'x y', '-dash', '.hidden', 'é', 'z'.repeat(60), '00', 'ff', '日本');
const mtime = fc.record({ sec: fc.constantFrom(0, 1, 1700000000), nsec: fc.constantFrom(0, 1, 999999999) });
const owner = fc.constantFrom(0, 1000, 65535, 65536, 4294967295);
const xattrs = fc.uniqueArray(
  fc.record({ key: fc.constantFrom('user.a', 'user.b', 'trusted.x', 'security.selinux', 'trusted.overlay.foo', 'system.posix_acl_access'), value: fc.constantFrom('', 'dg==', 'c2hhcmVk', Buffer.alloc(300, 1).toString('base64')) }),
  { selector: (x) => x.key, maxLength: 3 },
);
const attrs = fc.record({ mode: fc.integer({ min: 0, max: 0o7777 }), uid: owner, gid: owner, mtime, xattrs });
const leaf = fc.oneof(
  attrs.map((a) => ({ ...a, type: 'file' as const, size: 0 })),
  fc.tuple(attrs, fc.uint8Array({ minLength: 1, maxLength: 5000 })).map(([a, c]) => ({ ...a, type: 'file' as const, size: c.length, inline: Buffer.from(c).toString('base64') })),
  fc.tuple(attrs, fc.integer({ min: 1, max: 2 ** 40 }), fc.boolean()).map(([a, size, withBacking]) => ({
    ...a, type: 'file' as const, size, digest: createHash('sha256').update(String(size)).digest('hex'),
    ...(withBacking ? { backing: `${String(size % 256).padStart(2, '0')}/object${size}` } : {}),
  })),
  fc.tuple(attrs, fc.string({ minLength: 1, maxLength: 300 }).filter((s) => !s.includes('\0'))).map(([a, target]) => ({ ...a, type: 'symlink' as const, target })),
  attrs.map((a) => ({ ...a, type: 'fifo' as const })),
  attrs.map((a) => ({ ...a, type: 'socket' as const })),
  attrs.map((a) => ({ ...a, type: 'whiteout' as const })),
  fc.tuple(attrs, fc.integer({ min: 1, max: 0xffffffff })).map(([a, rdev]) => ({ ...a, type: 'blockdev' as const, rdev })),
);

type Tree = { kind: 'dir'; attrs: fc.RecordValue<unknown> & object; children: Array<[string, Tree]> } | { kind: 'leaf'; entry: object };

const tree: fc.Arbitrary<Tree> = fc.letrec<{ node: Tree }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    leaf.map((entry) => ({ kind: 'leaf' as const, entry })),
    fc.record({
      kind: fc.constant('dir' as const),
      attrs,
      children: fc.uniqueArray(fc.tuple(names, tie('node')), { selector: ([n]) => n, maxLength: 6 }),
    }),
  ),
})).node;

function toManifest(rootAttrs: object, children: Array<[string, Tree]>, links: boolean[]): Manifest {
  const entries: Entry[] = [{ path: '/', type: 'dir', ...(rootAttrs as object) } as Entry];
  const walk = (base: string, kids: Array<[string, Tree]>) => {
    for (const [name, child] of kids) {
      const path = `${base}/${name}`;
      if (child.kind === 'dir') {
        entries.push({ path, type: 'dir', ...(child.attrs as object) } as Entry);
        walk(path, child.children);
      } else {
        entries.push({ ...(child.entry as object), path } as Entry);
      }
    }
  };
  walk('', children);
  entries.sort((a, b) => comparePaths(a.path, b.path));
  // Turn some files into hardlinks to an earlier file, the order the reader meets them in.
  const files: string[] = [];
  entries.forEach((e, i) => {
    if (e.type === 'file' && files.length > 0 && links[i % links.length]) {
      entries[i] = { path: e.path, type: 'hardlink', target: files[i % files.length]! };
    } else if (e.type === 'file') files.push(e.path);
  });
  for (const e of entries) if ('xattrs' in e && e.xattrs?.length === 0) delete e.xattrs;
  return { version: 1, entries };
}

function sortedKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortedKeys);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortedKeys((v as Record<string, unknown>)[k])]));
  return v;
}

/** What the image keeps: directory sizes are the image's own, xattr order is the image's. One line per entry. */
function comparable(m: Manifest): string[] {
  return m.entries.map((e) => {
    const c: Record<string, unknown> = { ...e };
    if (e.type === 'dir') delete c.size;
    if ('xattrs' in e && e.xattrs) c.xattrs = [...e.xattrs].sort((a, b) => (a.key < b.key ? -1 : 1));
    return JSON.stringify(sortedKeys(c));
  });
}

t.test('random trees: fsck.erofs finds no error and the reader gives the tree back', async (t) => {
  let runs = 0;
  fc.assert(
    fc.property(attrs, fc.uniqueArray(fc.tuple(names, tree), { selector: ([n]) => n, maxLength: 8 }), fc.array(fc.boolean(), { minLength: 1, maxLength: 5 }), (rootAttrs, children, links) => {
      const manifest = toManifest(rootAttrs, children, links);
      const image = writeImage(manifest, { maxVersion: 0 });
      const problem = fsck(image);
      if (problem !== undefined) throw new Error(`fsck.erofs: ${problem}`);
      const back = comparable(imageToManifest(image));
      const sent = comparable(manifest);
      if (back.join('\n') !== sent.join('\n')) t.same(back, sent, 'the reader gives the tree back');
      runs++;
    }),
    { numRuns: 40, seed: 20251122 },
  );
  t.equal(runs, 40);
});

t.test('a manifest given up to the build (consume) gives the same image, and its entries are let go', async (t) => {
  for (const m of [everyKind, bigDirectory]) {
    const manifest = validateManifest(structuredClone(m));
    const count = manifest.entries.length;
    const image = writeTree(imageTree({ manifest, consume: true }));
    t.same(image, writeImage(m));
    t.equal(manifest.entries.length, count);
    t.ok(manifest.entries.every((e) => e === undefined), 'no entry is held');
  }
});
