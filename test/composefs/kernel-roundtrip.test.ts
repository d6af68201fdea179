// Round trip through the real kernel: random trees (fast-check, fixed seed) ->
// manifest -> image (writeImage) -> fsck.erofs -> the broker's composefs mount
// (executePlan of planComposefsMount: file-backed EROFS, idmapped, under a
// read-only overlay whose data-only layer is a content-addressed object store)
// -> attached in this test's private mount namespace -> every attribute of
// every entry compared with the manifest: type, mode, uid/gid through the
// idmap, size, mtime (ns), xattrs, symlink targets, hardlink inode sharing and
// link counts, directory listings, and the content bytes read through the
// overlay redirect into the object store.
import t from 'tap';
import fc from 'fast-check';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync, type BigIntStats } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { executePlan } from '../../src/broker/execute.js';
import { MountLocker } from '../../src/broker/lock.js';
import { writeImage } from '../../src/composefs/writer.js';
import { comparePaths } from '../../src/manifest/paths.js';
import { planComposefsMount } from '../../src/policy/plan.js';
import type { Entry, Manifest } from '../../src/schema/types.generated.js';
import { moveMount } from '../../src/sys/syscalls.js';
import { UserNamespaceCache } from '../../src/sys/userns.js';
import { FsVerityHasher } from '../../src/verity/fsverity.js';

// ---- xattrs and umount2 through koffi (Node has no xattr API; `attr` is not installed) ----

const require = createRequire(import.meta.url);
const koffi = require('koffi') as typeof import('koffi');
const libc = koffi.load('libc.so.6');
const llistxattrFn = libc.func('long llistxattr(const char *path, void *list, size_t size)');
const lgetxattrFn = libc.func('long lgetxattr(const char *path, const char *name, void *value, size_t size)');
const umount2Fn = libc.func('int umount2(const char *target, int flags)');
const errnoLocation = libc.func('int *__errno_location()');
const errno = (): number => koffi.decode(errnoLocation(), 'int') as number;
const MNT_DETACH = 2;

const ENODATA = 61;

/**
 * Every xattr of a path (not followed if a symlink), name -> value. The kernel
 * lists user.* xattrs of symlinks and special files but refuses to read them
 * (xattr_permission: ENODATA); their value is null.
 */
function readXattrs(path: string): Map<string, Buffer | null> {
  const size = Number(llistxattrFn(path, null, 0));
  if (size < 0) throw new Error(`llistxattr(${path}): errno ${errno()}`);
  const out = new Map<string, Buffer | null>();
  if (size === 0) return out;
  const list = Buffer.alloc(size);
  const got = Number(llistxattrFn(path, list, size));
  if (got < 0) throw new Error(`llistxattr(${path}): errno ${errno()}`);
  for (const name of list.subarray(0, got).toString('utf8').split('\0')) {
    if (name === '') continue;
    const len = Number(lgetxattrFn(path, name, null, 0));
    if (len < 0 && errno() === ENODATA && name.startsWith('user.')) {
      out.set(name, null);
      continue;
    }
    if (len < 0) throw new Error(`lgetxattr(${path}, ${name}): errno ${errno()}`);
    const value = Buffer.alloc(len);
    const n = Number(lgetxattrFn(path, name, value, len));
    if (n < 0) throw new Error(`lgetxattr(${path}, ${name}): errno ${errno()}`);
    out.set(name, value.subarray(0, n));
  }
  return out;
}

function umount(dir: string): void {
  if (Number(umount2Fn(dir, 0)) === 0) return;
  const first = errno();
  if (Number(umount2Fn(dir, MNT_DETACH)) !== 0) throw new Error(`umount2(${dir}): errno ${errno()}`);
  throw new Error(`umount2(${dir}) failed with errno ${first} (detached lazily instead)`);
}

// ---- the place everything lives -----------------------------------------------------

const base = mkdtempSync(join(tmpdir(), 'mountgate-kroundtrip-'));
const objectsDir = join(base, 'objects');
const mnt = join(base, 'mnt');
mkdirSync(objectsDir, { mode: 0o755 });
mkdirSync(mnt);
const cache = new UserNamespaceCache();
mkdirSync(join(base, 'run'));
const locker = new MountLocker(join(base, 'run'), 60_000);

function mountedHere(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.split(' ')[4]?.startsWith(base));
}

t.teardown(() => {
  cache.close();
  locker.close();
  for (let i = 0; i < 10 && mountedHere().length > 0; i++) umount2Fn(mnt, MNT_DETACH);
  rmSync(base, { recursive: true, force: true });
});

const UID_BASE = 100000;
const GID_BASE = 200000;
const grant = { uidMap: [{ from: 0, to: UID_BASE, count: 65536 }], gidMap: [{ from: 0, to: GID_BASE, count: 65536 }], noexec: false };

/** Store `content` as the object store does: objects/xx/rest, named by its fs-verity digest. Returns [digest, backing]. */
function storeObject(content: Buffer): [string, string] {
  const digest = new FsVerityHasher().update(content).digest().toString('hex');
  const backing = `${digest.slice(0, 2)}/${digest.slice(2)}`;
  const file = join(objectsDir, backing);
  if (!existsSync(file)) {
    mkdirSync(join(objectsDir, digest.slice(0, 2)), { recursive: true, mode: 0o755 });
    writeFileSync(file, content, { mode: 0o444 });
  }
  return [digest, backing];
}

/** Deterministic pseudo-random bytes: the same (seed, size) gives the same content (so objects are shared). */
function contentOf(seed: number, size: number): Buffer {
  const out = Buffer.alloc(size);
  let block = createHash('sha256').update(`seed ${seed}`).digest();
  for (let off = 0; off < size; off += block.length) {
    block.copy(out, off);
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

/** fsck.erofs reading every file; undefined when it finds nothing wrong, else its output. */
function fsck(image: string): string | undefined {
  try {
    execFileSync('fsck.erofs', ['--extract', image], { stdio: 'pipe' });
    return undefined;
  } catch (err) {
    const e = err as { status?: number; stdout?: Buffer; stderr?: Buffer };
    return `exit ${e.status}: ${e.stdout?.toString() ?? ''}${e.stderr?.toString() ?? ''}`;
  }
}

// ---- what the mount must show ---------------------------------------------------------

interface Expected {
  kind: 'dir' | 'file' | 'symlink' | 'fifo' | 'whiteout';
  mode: number;
  /** Ids as the mount shows them (after the idmap). */
  uid: number;
  gid: number;
  mtimeNs: bigint;
  size?: number;
  nlink: number;
  xattrs: Map<string, Buffer>;
  target?: Buffer;
  content?: Buffer;
  /** Names of the children, for directories. */
  children?: string[];
  /** The path of the entry this one is a hardlink of, or its own. */
  inode: string;
}

const mapId = (id: number, baseId: number): number => (id < 65536 ? baseId + id : 65534);

/**
 * What the mount must show for a manifest, given each regular file's bytes.
 * A whiteout is stored escaped (composefs format 1): the mount shows an empty
 * regular file carrying trusted.overlay.whiteout (so an overlay stacked on
 * this mount treats it as a whiteout), and its directory carries
 * trusted.overlay.whiteouts and the opaque=x mark; the user.overlay.* twins
 * serve overlays mounted with userxattr.
 */
function expectations(manifest: Manifest, contents: Map<string, Buffer>): Map<string, Expected> {
  const out = new Map<string, Expected>();
  const linksTo = new Map<string, number>();
  const subdirs = new Map<string, number>();
  for (const e of manifest.entries) {
    if (e.type === 'hardlink') linksTo.set(e.target, (linksTo.get(e.target) ?? 0) + 1);
    if (e.type === 'dir' && e.path !== '/') subdirs.set(parentOf(e.path), (subdirs.get(parentOf(e.path)) ?? 0) + 1);
  }
  const byPath = new Map(manifest.entries.map((e) => [e.path, e]));
  for (const e of manifest.entries) {
    const own = e.type === 'hardlink' ? byPath.get(e.target)! : e;
    if (own.type === 'hardlink' || own.type === 'chardev' || own.type === 'blockdev' || own.type === 'socket') throw new Error(`unexpected ${own.type}`);
    const xattrs = new Map<string, Buffer>((own.xattrs ?? []).map((x) => [x.key, Buffer.from(x.value, 'base64')]));
    const x: Expected = {
      kind: own.type,
      mode: own.mode,
      uid: mapId(own.uid, UID_BASE),
      gid: mapId(own.gid, GID_BASE),
      mtimeNs: BigInt(own.mtime.sec) * 1_000_000_000n + BigInt(own.mtime.nsec),
      nlink: own.type === 'dir' ? 2 + (subdirs.get(own.path) ?? 0) : 1 + (linksTo.get(own.path) ?? 0),
      xattrs,
      inode: own.path,
    };
    if (own.type === 'file') {
      x.content = contents.get(own.path)!;
      x.size = own.size;
    } else if (own.type === 'symlink') {
      x.target = Buffer.from(own.target, 'utf8');
      x.size = x.target.length;
    } else if (own.type === 'fifo' || own.type === 'whiteout') {
      x.size = 0;
    }
    if (own.type === 'whiteout') {
      xattrs.set('trusted.overlay.whiteout', Buffer.alloc(0));
      xattrs.set('user.overlay.whiteout', Buffer.alloc(0));
    }
    if (own.type === 'dir') x.children = [];
    out.set(e.path, x);
  }
  for (const e of manifest.entries) {
    if (e.path === '/') continue;
    const parent = out.get(parentOf(e.path))!;
    parent.children!.push(e.path.slice(e.path.lastIndexOf('/') + 1));
    if (e.type === 'whiteout') {
      for (const k of ['trusted.overlay.whiteouts', 'user.overlay.whiteouts']) parent.xattrs.set(k, Buffer.alloc(0));
      for (const k of ['trusted.overlay.opaque', 'user.overlay.opaque']) parent.xattrs.set(k, Buffer.from('x'));
    }
  }
  return out;
}

function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

const kindOf = (st: BigIntStats): string =>
  st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : st.isFIFO() ? 'fifo' : st.isCharacterDevice() ? 'chardev' : st.isBlockDevice() ? 'blockdev' : st.isSocket() ? 'socket' : 'unknown';

const show = (b: Buffer | null | undefined): string => (b == null ? 'none' : b.length > 40 ? `${b.length} bytes sha256:${createHash('sha256').update(b).digest('hex').slice(0, 16)}` : JSON.stringify(b.toString('latin1')));

/** Walks the mounted tree and lists every difference from the expectations. */
function compareMount(root: string, expected: Map<string, Expected>): string[] {
  const problems: string[] = [];
  const inoOf = new Map<string, bigint>();
  const seen = new Set<string>();
  const visit = (path: string) => {
    const where = path === '/' ? root : root + path;
    seen.add(path);
    const x = expected.get(path);
    if (!x) {
      problems.push(`${path}: in the mount but not in the manifest`);
      return;
    }
    const st = lstatSync(where, { bigint: true });
    const p = (what: string, got: unknown, want: unknown) => {
      if (got !== want) problems.push(`${path}: ${what} is ${String(got)}, expected ${String(want)}`);
    };
    p('type', kindOf(st), x.kind === 'whiteout' ? 'file' : x.kind);
    p('mode', `0${(Number(st.mode) & 0o7777).toString(8)}`, `0${x.mode.toString(8)}`);
    p('uid', Number(st.uid), x.uid);
    p('gid', Number(st.gid), x.gid);
    p('mtime ns', st.mtimeNs, x.mtimeNs);
    p('nlink', Number(st.nlink), x.nlink);
    if (x.size !== undefined) p('size', Number(st.size), x.size);
    const prior = inoOf.get(x.inode);
    if (prior === undefined) inoOf.set(x.inode, st.ino);
    else if (prior !== st.ino) problems.push(`${path}: st_ino ${st.ino}, but its hardlink ${x.inode} has ${prior}`);
    const xattrs = readXattrs(where);
    for (const k of xattrs.keys()) if (!k.startsWith('user.') && !k.startsWith('trusted.')) xattrs.delete(k);
    const special = x.kind !== 'dir' && x.kind !== 'file' && x.kind !== 'whiteout';
    for (const [k, v] of x.xattrs) {
      const got = xattrs.get(k);
      if (got === undefined) problems.push(`${path}: xattr ${k} missing`);
      else if (got === null) {
        if (!(special && k.startsWith('user.'))) problems.push(`${path}: xattr ${k} is listed but unreadable`);
      } else if (!got.equals(v)) problems.push(`${path}: xattr ${k} is ${show(got)}, expected ${show(v)}`);
    }
    for (const k of xattrs.keys()) if (!x.xattrs.has(k)) problems.push(`${path}: unexpected xattr ${k}=${show(xattrs.get(k))}`);
    if (x.kind === 'symlink' && st.isSymbolicLink()) {
      const target = readlinkSync(where, { encoding: 'buffer' });
      if (!target.equals(x.target!)) problems.push(`${path}: symlink target ${show(target)}, expected ${show(x.target)}`);
    }
    if ((x.kind === 'file' || x.kind === 'whiteout') && st.isFile()) {
      let data: Buffer | undefined;
      try {
        data = readFileSync(where);
      } catch (err) {
        problems.push(`${path}: reading fails: ${(err as Error).message}`);
      }
      const want = x.content ?? Buffer.alloc(0);
      if (data && !data.equals(want)) problems.push(`${path}: content ${show(data)}, expected ${show(want)}`);
    }
    if (x.kind === 'dir' && st.isDirectory()) {
      const names = readdirSync(where).sort();
      const want = [...x.children!].sort();
      if (JSON.stringify(names) !== JSON.stringify(want)) problems.push(`${path}: lists ${JSON.stringify(names)}, expected ${JSON.stringify(want)}`);
      for (const name of names) visit(path === '/' ? `/${name}` : `${path}/${name}`);
    }
  };
  visit('/');
  // Distinct inodes in the image are distinct in the mount.
  const owners = new Map<bigint, string>();
  for (const [inode, ino] of inoOf) {
    const other = owners.get(ino);
    if (other !== undefined) problems.push(`${inode} and ${other} share st_ino ${ino} but are different inodes`);
    owners.set(ino, inode);
  }
  for (const path of expected.keys()) if (!seen.has(path)) problems.push(`${path}: in the manifest but not found in the mount`);
  return problems;
}

/** Writes the image, checks it with fsck.erofs, mounts it as the broker does, compares, and tears it all down. */
async function roundTrip(manifest: Manifest, contents: Map<string, Buffer>, label: string): Promise<string[]> {
  const image = join(base, `${label}.cfs`);
  writeFileSync(image, writeImage(manifest), { mode: 0o644 });
  try {
    const problem = fsck(image);
    if (problem !== undefined) return [`fsck.erofs: ${problem}`];
    const { mountFd } = await executePlan(planComposefsMount(grant, image, objectsDir, { verity: false, fileBackedErofs: true }), [], { userns: cache, locker });
    try {
      moveMount(mountFd, mnt);
    } finally {
      closeSync(mountFd);
    }
    try {
      return compareMount(mnt, expectations(manifest, contents));
    } finally {
      umount(mnt);
    }
  } finally {
    rmSync(image, { force: true });
  }
}

// ---- random trees -------------------------------------------------------------------------

interface Attrs {
  mode: number;
  uid: number;
  gid: number;
  mtime: { sec: number; nsec: number };
  xattrs: Array<{ key: string; value: string }>;
}

type Leaf =
  | { kind: 'file'; attrs: Attrs; size: number; seed: number; inline: boolean }
  | { kind: 'symlink'; attrs: Attrs; target: string }
  | { kind: 'fifo'; attrs: Attrs }
  | { kind: 'whiteout'; attrs: Attrs };
type Tree = { kind: 'dir'; attrs: Attrs; children: Array<[string, Tree]> } | Leaf;

const id = fc.oneof(fc.constantFrom(0, 1, 1000, 65534, 65535), fc.integer({ min: 0, max: 65535 }));
const mtime = fc.record({
  sec: fc.oneof(fc.constantFrom(0, 1, 1700000000, 2 ** 31 - 1, 2 ** 32 + 7, 2 ** 40), fc.integer({ min: 0, max: 2 ** 34 })),
  nsec: fc.oneof(fc.constantFrom(0, 1, 999999999), fc.integer({ min: 0, max: 999999999 })),
});
// Values from a small pool are shared between inodes (the image's shared xattr area).
const xattrValue = fc.oneof(
  fc.constantFrom('', 'x', 'shared value', 'y'.repeat(100)).map((s) => Buffer.from(s).toString('base64')),
  fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b).toString('base64')),
);
const xattrKey = fc.oneof(
  // trusted.overlay.* other than the overlay's own names: composefs escapes it, the mount shows it back unescaped.
  fc.constantFrom('user.a', 'user.b', 'user.mime_type', 'user.overlay.x', 'trusted.x', 'trusted.md5', 'trusted.overlay.custom'),
  fc.stringMatching(/^[a-z0-9_.-]{1,30}$/).chain((s) => fc.constantFrom(`user.${s}`, `trusted.${s}`)),
);
const xattrs = fc.uniqueArray(fc.record({ key: xattrKey, value: xattrValue }), { selector: (x) => x.key, maxLength: 4 });
const attrs: fc.Arbitrary<Attrs> = fc.record({ mode: fc.integer({ min: 0, max: 0o7777 }), uid: id, gid: id, mtime, xattrs });

const fileSize = fc.oneof(
  { arbitrary: fc.constant(0), weight: 2 },
  { arbitrary: fc.integer({ min: 1, max: 64 }), weight: 3 },
  { arbitrary: fc.integer({ min: 65, max: 5000 }), weight: 3 },
  { arbitrary: fc.constantFrom(4095, 4096, 4097, 8192, 8193), weight: 2 },
  { arbitrary: fc.integer({ min: 5001, max: 70000 }), weight: 3 },
  { arbitrary: fc.constant(4 * 1024 * 1024 + 123), weight: 1 },
);
const leaf: fc.Arbitrary<Leaf> = fc.oneof(
  { arbitrary: fc.record({ kind: fc.constant('file' as const), attrs, size: fileSize, seed: fc.integer({ min: 0, max: 5 }), inline: fc.boolean() }), weight: 5 },
  {
    arbitrary: fc.record({
      kind: fc.constant('symlink' as const),
      attrs,
      target: fc.oneof(
        fc.constantFrom('usr/bin', '../x', '/abs/path', 'é/日本', 'a'.repeat(4095), '.'),
        fc.string({ unit: 'grapheme', minLength: 1, maxLength: 100 }).filter((s) => !s.includes('\0') && Buffer.byteLength(s) <= 4095),
      ),
    }),
    weight: 2,
  },
  { arbitrary: fc.record({ kind: fc.constant('fifo' as const), attrs }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('whiteout' as const), attrs }), weight: 1 },
);
// Names: some that sort oddly, the store's fan-out names (the root hides 00..ff only where the tree has no such name), the longest one.
const name = fc.oneof(
  fc.constantFrom('a', 'b', 'dir', 'x y', '-dash', '.hidden', 'é', '日本', '00', 'ff', '7e', 'z'.repeat(255)),
  fc.stringMatching(/^[a-zA-Z0-9_.-]{1,24}$/).filter((n) => n !== '.' && n !== '..'),
);
const tree: fc.Arbitrary<Tree> = fc.letrec<{ node: Tree }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    leaf,
    fc.record({ kind: fc.constant('dir' as const), attrs, children: fc.uniqueArray(fc.tuple(name, tie('node')), { selector: ([n]) => n, maxLength: 6 }) }),
  ),
})).node;
const rootChildren = fc.uniqueArray(fc.tuple(name, tree), { selector: ([n]) => n, minLength: 1, maxLength: 10 });
/** Pairs (a, b): the a-th non-directory becomes a hardlink of the b-th. */
const links = fc.array(fc.tuple(fc.nat(), fc.nat()), { maxLength: 4 });

function entryAttrs(a: Attrs): Omit<Attrs, 'xattrs'> & { xattrs?: Attrs['xattrs'] } {
  const { xattrs: x, ...rest } = a;
  return x.length > 0 ? { ...rest, xattrs: x } : rest;
}

/** The manifest of a random tree, the bytes of each regular file, and the objects stored for them. */
function buildManifest(rootAttrs: Attrs, children: Array<[string, Tree]>, linkPairs: Array<[number, number]>): { manifest: Manifest; contents: Map<string, Buffer> } {
  const entries: Entry[] = [{ path: '/', type: 'dir', ...entryAttrs(rootAttrs) }];
  const contents = new Map<string, Buffer>();
  const walk = (dir: string, kids: Array<[string, Tree]>) => {
    for (const [n, node] of kids) {
      const path = `${dir === '/' ? '' : dir}/${n}`;
      const a = entryAttrs(node.attrs);
      switch (node.kind) {
        case 'dir':
          entries.push({ path, type: 'dir', ...a });
          walk(path, node.children);
          break;
        case 'file': {
          const content = contentOf(node.seed, node.size);
          contents.set(path, content);
          if (node.size === 0) entries.push({ path, type: 'file', ...a, size: 0 });
          else if (node.inline && node.size <= 5000) entries.push({ path, type: 'file', ...a, size: node.size, inline: content.toString('base64') });
          else {
            const [digest, backing] = storeObject(content);
            entries.push({ path, type: 'file', ...a, size: node.size, digest, backing });
          }
          break;
        }
        case 'symlink':
          entries.push({ path, type: 'symlink', ...a, target: node.target });
          break;
        case 'fifo':
          entries.push({ path, type: 'fifo', ...a });
          break;
        case 'whiteout':
          entries.push({ path, type: 'whiteout', ...a });
          break;
      }
    }
  };
  walk('/', children);
  entries.sort((x, y) => comparePaths(x.path, y.path));
  const linkable = entries.map((e, i) => [e, i] as const).filter(([e]) => e.type === 'file' || e.type === 'symlink' || e.type === 'fifo');
  const targets = new Set<number>();
  const linked = new Set<number>();
  for (const [a, b] of linkPairs) {
    if (linkable.length < 2) break;
    const [, from] = linkable[a % linkable.length]!;
    const [to, toIndex] = linkable[b % linkable.length]!;
    if (from === toIndex || targets.has(from) || linked.has(from) || linked.has(toIndex)) continue;
    entries[from] = { path: entries[from]!.path, type: 'hardlink', target: to.path };
    contents.delete(entries[from]!.path);
    if (to.type === 'file') contents.set(entries[from]!.path, contents.get(to.path)!);
    targets.add(toIndex);
    linked.add(from);
  }
  return { manifest: { version: 1, entries }, contents };
}

const NUM_RUNS = 40;

t.test('random trees: fsck.erofs is clean and the composefs mount shows exactly the manifest', async (t) => {
  let runs = 0;
  let entriesSeen = 0;
  const kinds = new Map<string, number>();
  await fc.assert(
    fc.asyncProperty(attrs, rootChildren, links, async (rootAttrs, children, linkPairs) => {
      const { manifest, contents } = buildManifest(rootAttrs, children, linkPairs);
      const problems = await roundTrip(manifest, contents, `run-${runs}`);
      if (problems.length > 0) {
        throw new Error(`${problems.length} differences:\n  ${problems.slice(0, 30).join('\n  ')}\nmanifest: ${JSON.stringify(manifest).slice(0, 4000)}`);
      }
      runs++;
      entriesSeen += manifest.entries.length;
      for (const e of manifest.entries) {
        const k = e.type === 'file' ? (e.size === 0 ? 'empty file' : e.inline ? 'inline file' : e.size > 4096 ? 'multi-block file' : 'external file') : e.type;
        kinds.set(k, (kinds.get(k) ?? 0) + 1);
      }
    }),
    // Shrinking mounts once per step: bounded so a failure still ends well inside tap's timeout.
    { numRuns: NUM_RUNS, seed: 20260514, interruptAfterTimeLimit: 150_000, markInterruptAsFailure: true },
  );
  t.equal(runs, NUM_RUNS, `${NUM_RUNS} trees, ${entriesSeen} entries round-tripped`);
  // The generator really produced every kind it is meant to cover.
  for (const k of ['dir', 'empty file', 'inline file', 'external file', 'multi-block file', 'symlink', 'hardlink', 'fifo', 'whiteout']) {
    t.ok((kinds.get(k) ?? 0) > 0, `covered: ${k} (${kinds.get(k) ?? 0})`);
  }
});

t.test('overlay xattrs in a manifest are escaped: they show in the mount and steer nothing', async (t) => {
  const t0 = { sec: 1700000000, nsec: 123 };
  const inline = Buffer.from('the inline bytes');
  const other = contentOf(99, 9000);
  const [digest, backing] = storeObject(other);
  const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');
  const manifest: Manifest = {
    version: 1,
    entries: [
      { path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: t0 },
      // A file whose own xattrs claim a redirect to another object: must still read its inline bytes.
      {
        path: '/claims-redirect', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: t0, size: inline.length, inline: b64(inline),
        xattrs: [{ key: 'trusted.overlay.redirect', value: b64(`/${backing}`) }, { key: 'trusted.overlay.metacopy', value: '' }],
      },
      // A directory whose xattr claims it is opaque: its contents stay visible.
      { path: '/opaque', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: t0, xattrs: [{ key: 'trusted.overlay.opaque', value: b64('y') }] },
      { path: '/opaque/inside', type: 'file', mode: 0o644, uid: 70000, gid: 4294967295, mtime: t0, size: other.length, digest, backing },
    ],
  };
  const contents = new Map([['/claims-redirect', inline], ['/opaque/inside', other]]);
  // Ids outside the idmap show as the overflow id 65534 (mapId).
  t.same(await roundTrip(manifest, contents, 'escaped'), [], 'the mount shows exactly the manifest');
});

t.test('nothing is left behind', async (t) => {
  t.same(mountedHere(), [], 'no mount under the test directory');
  t.same(readdirSync(base).filter((n) => n.endsWith('.cfs')), [], 'no image file left');
});
