// Names through the real kernel (issue 7, finding 8): an image whose names,
// symlink targets, xattr keys and backing path are bytes that are not UTF-8,
// and whose names sort differently in UTF-8 and UTF-16 (U+E000..U+FFFF
// against characters above U+FFFF), passes fsck.erofs; mounted as the broker
// mounts it (file-backed EROFS, idmapped, under an overlay with a data-only
// object store), every name is listed by readdir (as Buffers, in byte order)
// and found by lstat of its Buffer path. EROFS looks names up by binary search
// over the sorted dirents, so a name out of byte order is listed but not found.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { closeSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { executePlan } from '../../src/broker/execute.js';
import { MountLocker } from '../../src/broker/lock.js';
import { writeImage } from '../../src/composefs/writer.js';
import { validateManifest } from '../../src/manifest/load.js';
import { planComposefsMount } from '../../src/policy/plan.js';
import type { Entry, Manifest } from '../../src/schema/types.generated.js';
import { moveMount } from '../../src/sys/syscalls.js';
import { UserNamespaceCache } from '../../src/sys/userns.js';
import { FsVerityHasher } from '../../src/verity/fsverity.js';

const require = createRequire(import.meta.url);
const koffi = require('koffi') as typeof import('koffi');
const libc = koffi.load('libc.so.6');
// Byte paths and names: NUL-terminated Buffers, not JS strings.
const lgetxattrFn = libc.func('long lgetxattr(const uint8_t *path, const uint8_t *name, void *value, size_t size)');
const umount2Fn = libc.func('int umount2(const char *target, int flags)');
const MNT_DETACH = 2;

const cstr = (b: Buffer) => Buffer.concat([b, Buffer.from([0])]);
function getXattr(path: Buffer, name: Buffer): Buffer | undefined {
  const value = Buffer.alloc(256);
  const n = Number(lgetxattrFn(cstr(path), cstr(name), value, value.length));
  return n < 0 ? undefined : value.subarray(0, n);
}

const base = mkdtempSync(join(tmpdir(), 'mountgate-knames-'));
const objectsDir = join(base, 'objects');
const mnt = join(base, 'mnt');
mkdirSync(objectsDir, { mode: 0o755 });
mkdirSync(mnt);
const cache = new UserNamespaceCache();
mkdirSync(join(base, 'run'));
const locker = new MountLocker(join(base, 'run'), 60_000);
const mountedHere = () => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.split(' ')[4]?.startsWith(base));
t.teardown(() => {
  cache.close();
  locker.close();
  for (let i = 0; i < 10 && mountedHere().length > 0; i++) umount2Fn(mnt, MNT_DETACH);
  rmSync(base, { recursive: true, force: true });
});

const t0 = { sec: 1700000000, nsec: 0 };
const attrs = { mode: 0o644, uid: 0, gid: 0, mtime: t0 };
const dirAttrs = { ...attrs, mode: 0o755 };
const asBytes = (b: Buffer) => ({ base64: b.toString('base64') });
const B = (...parts: Array<string | number[]>) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p))));
/** The manifest spelling of bytes: text when UTF-8, as the converter writes it. */
const spell = (b: Buffer) => (Buffer.from(b.toString('utf8'), 'utf8').equals(b) ? b.toString('utf8') : asBytes(b));
const byteOrder = (a: Buffer, b: Buffer) => Buffer.compare(a, b);

// The content of the one external file lives in the store under a backing path that is not UTF-8.
const external = Buffer.alloc(9000, 0x5a);
const digest = new FsVerityHasher().update(external).digest().toString('hex');
const backing = B('bb/', [0xfe, 0x80]);
mkdirSync(join(objectsDir, 'bb'), { mode: 0o755 });
writeFileSync(Buffer.concat([Buffer.from(objectsDir + '/'), backing]), external, { mode: 0o444 });

// Root names: not UTF-8, and UTF-8 whose byte order differs from UTF-16 order.
const nonUtf8Dir = B([0xff, 0xfe]);
const rootNames: Buffer[] = [nonUtf8Dir, B('\ue000'), B('\uffee'), B('\u{1f600}'), B('\u{10000}'), B('caf', [0xe9]), B('plain'), B([0x80])];
// A directory of several blocks of such names: lookups binary-search across blocks.
const many: Buffer[] = Array.from({ length: 300 }, (_, i) => [B(`n${i}`, [0xc0 + (i % 64)]), B(`n${i}\u{1f600}`), B(`n${i}\ue000`)][i % 3]!);

const symlinkTarget = B('../', [0xff, 0xfe], '/', [0xc0, 0xaf]);
const xattrKey = B('user.', [0xff]);
const inline = Buffer.from('inline under a byte name');

function manifest(): Manifest {
  const entries: Array<{ path: Buffer; entry: (path: Entry['path']) => Entry }> = [];
  for (const name of rootNames) {
    const path = B('/', name);
    if (name.equals(nonUtf8Dir)) entries.push({ path, entry: (p) => ({ path: p, type: 'dir', ...dirAttrs, xattrs: [{ key: asBytes(xattrKey), value: Buffer.from('v').toString('base64') }] }) });
    else entries.push({ path, entry: (p) => ({ path: p, type: 'file', ...attrs, size: inline.length, inline: inline.toString('base64') }) });
  }
  const under = (n: Buffer) => B('/', nonUtf8Dir, '/', n);
  entries.push({ path: under(B('link', [0x99])), entry: (p) => ({ path: p, type: 'symlink', ...attrs, mode: 0o777, target: asBytes(symlinkTarget) }) });
  entries.push({ path: under(B('external', [0xfa])), entry: (p) => ({ path: p, type: 'file', ...attrs, size: external.length, digest, backing: asBytes(backing) }) });
  entries.push({ path: under(B('hard', [0xfb])), entry: (p) => ({ path: p, type: 'hardlink', target: asBytes(B('/caf', [0xe9])) }) });
  entries.push({ path: B('/many'), entry: (p) => ({ path: p, type: 'dir', ...dirAttrs }) });
  for (const n of many) entries.push({ path: B('/many/', n), entry: (p) => ({ path: p, type: 'file', ...attrs, size: 0 }) });
  const slashLowest = (b: Buffer) => Buffer.from(b.map((c) => (c === 0x2f ? 0 : c)));
  entries.sort((a, b) => Buffer.compare(slashLowest(a.path), slashLowest(b.path)));
  return { version: 1, entries: [{ path: '/', type: 'dir', ...dirAttrs }, ...entries.map((e) => e.entry(spell(e.path)))] };
}

function fsck(image: string): string | undefined {
  try {
    execFileSync('fsck.erofs', ['--extract', image], { stdio: 'pipe' });
    return undefined;
  } catch (err) {
    const e = err as { status?: number; stdout?: Buffer; stderr?: Buffer };
    return `exit ${e.status}: ${e.stdout?.toString() ?? ''}${e.stderr?.toString() ?? ''}`;
  }
}

t.test('byte names: fsck.erofs is clean, readdir lists every name in byte order, lstat finds each', async (t) => {
  const m = validateManifest(manifest());
  const image = join(base, 'names.cfs');
  writeFileSync(image, writeImage(m), { mode: 0o644 });
  t.equal(fsck(image), undefined, 'fsck.erofs finds no error');
  const { mountFd } = await executePlan(planComposefsMount({ uidMap: [{ from: 0, to: 100000, count: 65536 }], gidMap: [{ from: 0, to: 200000, count: 65536 }], noexec: false }, image, objectsDir, { verity: false, fileBackedErofs: true }), [], { userns: cache, locker });
  try {
    moveMount(mountFd, mnt);
  } finally {
    closeSync(mountFd);
  }
  try {
    const at = (...names: Buffer[]) => Buffer.concat([Buffer.from(mnt), ...names.flatMap((n) => [Buffer.from('/'), n])]);
    const rootListing = readdirSync(Buffer.from(mnt) as unknown as string, { encoding: 'buffer' });
    const wantRoot = [...rootNames, B('many')].sort(byteOrder);
    t.same(rootListing.map((b) => b.toString('hex')), wantRoot.map((b) => b.toString('hex')), 'the root lists exactly these names, in byte order');
    for (const name of rootNames) {
      const st = lstatSync(at(name) as unknown as string);
      t.ok(name.equals(nonUtf8Dir) ? st.isDirectory() : st.isFile(), `lstat finds ${name.toString('hex')}`);
      if (!name.equals(nonUtf8Dir)) t.ok(readFileSync(at(name) as unknown as string).equals(inline), `and reads ${name.toString('hex')}`);
    }
    const manyListing = readdirSync(at(B('many')) as unknown as string, { encoding: 'buffer' });
    t.same(manyListing.map((b) => b.toString('hex')), [...many].sort(byteOrder).map((b) => b.toString('hex')), `the ${many.length}-name directory lists them all, in byte order`);
    const missing = many.filter((n) => {
      try {
        return !lstatSync(at(B('many'), n) as unknown as string).isFile();
      } catch {
        return true;
      }
    });
    t.same(missing.map((b) => b.toString('hex')), [], 'lstat finds every one of them');
    t.ok(readlinkSync(at(nonUtf8Dir, B('link', [0x99])) as unknown as string, { encoding: 'buffer' }).equals(symlinkTarget), 'the symlink target is the exact bytes');
    t.same(getXattr(at(nonUtf8Dir), xattrKey), Buffer.from('v'), 'the xattr is found by its byte name');
    t.ok(readFileSync(at(nonUtf8Dir, B('external', [0xfa])) as unknown as string).equals(external), 'the external file reads through its byte backing path');
    const hard = lstatSync(at(nonUtf8Dir, B('hard', [0xfb])) as unknown as string);
    t.equal(hard.ino, lstatSync(at(B('caf', [0xe9])) as unknown as string).ino, 'the hardlink shares its target inode');
    t.equal(hard.nlink, 2);
  } finally {
    if (Number(umount2Fn(mnt, 0)) !== 0) umount2Fn(mnt, MNT_DETACH);
    rmSync(image, { force: true });
  }
});

t.test('nothing is left behind', async (t) => {
  t.same(mountedHere(), [], 'no mount under the test directory');
});
