// The tar reader against archives GNU tar makes of one real tree, in every
// format it writes (gnu, oldgnu, ustar, posix with sparse 0.0, 0.1 and 1.0,
// gzip and zstd): every entry's type, mode, owner, size, name and link target
// as `tar --list --verbose --numeric-owner` says, and its contents, mtime and
// xattrs as the files themselves say. Then layers into a manifest, whiteouts,
// and archives that must be refused.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readTar, type TarEntry } from '../../src/import/tar.js';
import { decompressed } from '../../src/import/decompress.js';
import { LayerTree, readLayer } from '../../src/import/layers.js';
import { fileInput } from '../../src/import/input.js';
import { importTarball } from '../../src/import/tarball.js';
import { manifestFromDirectory } from '../../src/client/images.js';
import { buildTree, makeTar, type TarFormat } from './fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'mountgate-tar-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const tree = join(dir, 'tree');
const shortTree = join(dir, 'short');
buildTree(tree);
buildTree(shortTree, false);

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface Read {
  entry: TarEntry;
  sha?: string;
}

async function readAll(file: string): Promise<Read[]> {
  const { chunks } = await decompressed(createReadStream(file), file);
  const r = readTar(chunks, { what: file });
  const out: Read[] = [];
  for (let e; (e = await r.next()); ) {
    let sha: string | undefined;
    if (e.type === 'file') {
      const h = createHash('sha256');
      for await (const c of r.data()) h.update(c);
      sha = h.digest('hex');
    }
    out.push({ entry: e, ...(sha ? { sha } : {}) });
  }
  return out;
}

/** `tar -tv` as records: type letter, mode bits, uid, gid, size, name, link. */
function tarList(file: string): { type: string; mode: number; uid: number; gid: number; size: number; name: string; link?: string }[] {
  const text = execFileSync('tar', ['--list', '--verbose', '--numeric-owner', '--full-time', '--quoting-style=literal', '-f', file], { encoding: 'utf8' });
  return text.trimEnd().split('\n').map((line) => {
    const m = /^(\S)(\S{9}) (\d+)\/(\d+) +(\d+) \S+ \S+ +(.*)$/.exec(line);
    if (!m) throw new Error(`unexpected tar -tv line: ${line}`);
    const perms = m[2]!;
    let mode = 0;
    const bits = [0o400, 0o200, 0o100, 0o40, 0o20, 0o10, 0o4, 0o2, 0o1];
    for (let i = 0; i < 9; i++) if (perms[i] !== '-' && perms[i] !== 'S' && perms[i] !== 'T') mode |= bits[i]!;
    if (/[sS]/.test(perms[2]!)) mode |= 0o4000;
    if (/[sS]/.test(perms[5]!)) mode |= 0o2000;
    if (/[tT]/.test(perms[8]!)) mode |= 0o1000;
    let name = m[6]!;
    let link: string | undefined;
    const sym = name.indexOf(' -> ');
    const hard = name.indexOf(' link to ');
    if (sym >= 0) [name, link] = [name.slice(0, sym), name.slice(sym + 4)];
    else if (hard >= 0) [name, link] = [name.slice(0, hard), name.slice(hard + 9)];
    return { type: m[1]!, mode, uid: Number(m[3]), gid: Number(m[4]), size: Number(m[5]), name, ...(link !== undefined ? { link } : {}) };
  });
}

const typeLetter: Record<string, string> = { file: '-', dir: 'd', symlink: 'l', hardlink: 'h', fifo: 'p', chardev: 'c', blockdev: 'b' };

function xattrsOf(path: string): Map<string, string> {
  const out = new Map<string, string>();
  const text = execFileSync('getfattr', ['--absolute-names', '-h', '-d', '-m', '-', '-e', 'hex', path], { encoding: 'utf8' });
  for (const line of text.split('\n')) {
    const m = /^([^#=][^=]*)=0x([0-9a-f]*)$/.exec(line);
    if (m) out.set(m[1]!, m[2]!);
  }
  return out;
}

const formats: { format: TarFormat; long: boolean; xattrs: boolean; ns: boolean }[] = [
  { format: 'gnu', long: true, xattrs: false, ns: false },
  { format: 'oldgnu', long: true, xattrs: false, ns: false },
  { format: 'ustar', long: false, xattrs: false, ns: false },
  { format: 'posix', long: true, xattrs: true, ns: true },
  { format: 'posix-sparse-0.0', long: true, xattrs: true, ns: true },
  { format: 'posix-sparse-0.1', long: true, xattrs: true, ns: true },
];

for (const f of formats) {
  t.test(`tar --format=${f.format}: every entry as tar lists it and as the files are`, async (tt) => {
    const root = f.long ? tree : shortTree;
    const file = join(dir, `${f.format}.tar`);
    makeTar(root, file, f.format);
    const got = await readAll(file);
    const listed = tarList(file);
    tt.equal(got.length, listed.length, 'as many entries as tar lists');
    for (let i = 0; i < listed.length; i++) {
      const want = listed[i]!;
      const { entry: e, sha } = got[i]!;
      const name = e.name.toString();
      const where = `${f.format}: ${want.name}`;
      tt.equal(name.replace(/\/$/, ''), want.name.replace(/\/$/, ''), `${where}: name`);
      tt.equal(typeLetter[e.type], want.type === 'h' ? 'h' : want.type, `${where}: type`);
      tt.equal(e.mode, want.mode, `${where}: mode ${want.mode.toString(8)}`);
      tt.same([e.uid, e.gid], [want.uid, want.gid], `${where}: owner`);
      if (e.type === 'file') tt.equal(e.size, want.size, `${where}: size`);
      if (want.link !== undefined) tt.equal(e.linkName?.toString(), want.link, `${where}: link target`);
      // Against the file itself.
      const path = join(root, name);
      const st = lstatSync(path, { bigint: true });
      tt.equal(e.mtime.sec, Number(st.mtimeNs / 1_000_000_000n), `${where}: mtime seconds`);
      if (f.ns) tt.equal(e.mtime.nsec, Number(st.mtimeNs % 1_000_000_000n), `${where}: mtime nanoseconds`);
      if (sha) tt.equal(sha, sha256(readFileSync(path)), `${where}: contents`);
      if (f.xattrs && e.type !== 'hardlink') {
        const mine = new Map(e.xattrs.map(([k, v]) => [k.toString(), v.toString('hex')]));
        tt.same(mine, xattrsOf(path), `${where}: xattrs`);
      }
    }
    const sparse = got.find((g) => g.entry.name.toString() === './sparse.img')!;
    tt.ok(f.format === 'ustar' || sparse.entry.sparse, `${f.format}: the sparse file is stored sparse`);
    tt.equal(sparse.entry.size, lstatSync(join(root, 'sparse.img')).size, 'its real size');
    const tool = got.find((g) => g.entry.name.toString() === './usr/bin/tool')!;
    tt.equal(tool.entry.mode, 0o4755, 'the setuid bit');
    if (f.xattrs) tt.ok(tool.entry.xattrs.some(([k]) => k.toString() === 'security.capability'), 'the file capability');
  });
}

t.test('gzip and zstd: the same entries as the uncompressed archive; truncated ones are refused', async (tt) => {
  const plain = join(dir, 'c.tar');
  makeTar(tree, plain, 'posix');
  execFileSync('sh', ['-c', `gzip -k -c ${plain} > ${plain}.gz && zstd -q -c ${plain} > ${plain}.zst`]);
  const want = (await readAll(plain)).map((r) => [r.entry.name.toString(), r.sha]);
  for (const ext of ['gz', 'zst']) {
    tt.same((await readAll(`${plain}.${ext}`)).map((r) => [r.entry.name.toString(), r.sha]), want, `${ext}: same names and contents`);
    const bytes = readFileSync(`${plain}.${ext}`);
    const cut = join(dir, `cut.tar.${ext}`);
    writeFileSync(cut, bytes.subarray(0, Math.floor(bytes.length / 2)));
    await tt.rejects(readAll(cut), { message: ext === 'gz' ? /not valid gzip|truncated/ : /not valid zstd|truncated/ }, `${ext}: a truncated stream is refused`);
  }
  // zstd through the zstd program (the default when installed) and through fzstd (MOUNTGATE_ZSTD=js): the same bytes.
  const saved = process.env.MOUNTGATE_ZSTD;
  process.env.MOUNTGATE_ZSTD = 'js';
  try {
    tt.same((await readAll(`${plain}.zst`)).map((r) => [r.entry.name.toString(), r.sha]), want, 'zst through fzstd: same names and contents');
  } finally {
    if (saved === undefined) delete process.env.MOUNTGATE_ZSTD;
    else process.env.MOUNTGATE_ZSTD = saved;
  }
  // A flipped byte inside a frame: the zstd program checks the frame's checksum.
  const bytes = readFileSync(`${plain}.zst`);
  bytes[Math.floor(bytes.length / 2)] ^= 0xff;
  const bad = join(dir, 'bad.tar.zst');
  writeFileSync(bad, bytes);
  await tt.rejects(readAll(bad), { message: /not valid zstd|checksum|corrupt/i }, 'a corrupted zstd stream is refused');
});

t.test('a layer tarball as a manifest: the same tree as the directory, owners as the archive says', async (tt) => {
  const file = join(dir, 'layer.tar');
  makeTar(tree, file, 'posix');
  const imported = await importTarball(fileInput(file), 'layer');
  const fromDir = await manifestFromDirectory(tree, { name: 'layer' });
  // The directory import records no xattrs (yet): compare all but those.
  const strip = (es: typeof imported.manifest.entries) => es.map((e) => ({ ...e, xattrs: undefined }));
  const root = { ...fromDir.manifest.entries[0]! };
  tt.same(strip(imported.manifest.entries.slice(1)), strip(fromDir.manifest.entries.slice(1)), 'every entry below the root: type, mode, owner, size, digest, mtime, targets, hardlinks');
  tt.match(imported.manifest.entries[0], { path: '/', type: 'dir', mode: root.mode }, 'the root from the archive\'s "./"');
  const hostname = imported.manifest.entries.find((e) => e.path === '/etc/hostname')!;
  tt.same(hostname.xattrs, [{ key: 'user.comment', value: Buffer.from('hello xattr').toString('base64') }], 'xattrs kept');
  tt.equal(imported.layer.diffId, `sha256:${sha256(readFileSync(file))}`, 'the diff ID is the sha256 of the archive');
  // The second read yields exactly the objects asked for, with the right bytes.
  const wanted = new Map([...fromDir.sources].map(([d, p]) => [d, lstatSync(p).size]));
  const seen = new Map<string, string>();
  for await (const o of imported.provider.objects(new Map(wanted))) {
    const h = createHash('sha256');
    for await (const c of o.chunks) h.update(c);
    seen.set(o.digest, h.digest('hex'));
  }
  tt.same(new Set(seen.keys()), new Set(wanted.keys()), 'every object, once');
  for (const [d, h] of seen) tt.equal(h, sha256(readFileSync(fromDir.sources.get(d)!)), `object ${d.slice(0, 12)}: the file's bytes`);
});

/** A layer made with tar from a tree written by `make`, with tar's extra arguments. */
function layerOf(name: string, make: (root: string) => void, extra: string[] = []): string {
  const root = join(dir, `src-${name}`);
  mkdirSync(root);
  make(root);
  const out = join(dir, `${name}.tar`);
  execFileSync('tar', ['--format=posix', '--sort=name', '-C', root, '-cf', out, ...extra, ...(extra.includes('-P') ? [] : ['.'])]);
  return out;
}

async function layer(file: string) {
  return readLayer(createReadStream(file), { what: file });
}

t.test('layers apply in order: whiteouts, opaque directories, directories merged', async (tt) => {
  const lower = layerOf('lower', (r) => {
    mkdirSync(join(r, 'a/b'), { recursive: true });
    mkdirSync(join(r, 'opq'));
    writeFileSync(join(r, 'a/keep'), 'keep');
    writeFileSync(join(r, 'a/gone'), 'gone');
    writeFileSync(join(r, 'a/b/deep'), 'deep');
    writeFileSync(join(r, 'opq/old'), 'old');
  });
  const upper = layerOf('upper', (r) => {
    mkdirSync(join(r, 'a'));
    mkdirSync(join(r, 'opq'));
    writeFileSync(join(r, 'a/.wh.gone'), '');
    writeFileSync(join(r, 'a/.wh.b'), '');
    writeFileSync(join(r, 'opq/.wh..wh..opq'), '');
    writeFileSync(join(r, 'opq/new'), 'new');
    writeFileSync(join(r, 'a/added'), 'added');
  });
  const t2 = new LayerTree();
  t2.apply((await layer(lower)).entries, 'lower');
  t2.apply((await layer(upper)).entries, 'upper');
  const paths = t2.manifest('x').entries.map((e) => e.path);
  tt.same(paths, ['/', '/a', '/a/added', '/a/keep', '/opq', '/opq/new'], 'what the whiteouts hide is gone, the opaque directory holds only the upper layer\'s files');
});

t.test('hostile archives are refused, naming the entry', async (tt) => {
  const dotdot = layerOf('dotdot', (r) => writeFileSync(join(r, 'x'), 'x'), ['--transform=s,^\\./x,../escape,']);
  await tt.rejects(layer(dotdot), { message: /"\.\.\/escape" has a "\.\." component/ });
  const abs = layerOf('abs', (r) => writeFileSync(join(r, 'x'), 'x'), ['-P', join(dir, 'src-abs', 'x')]);
  await tt.rejects(layer(abs), { message: /is an absolute name/ });
  const dev = layerOf('dev', (r) => execFileSync('mknod', [join(r, 'null'), 'c', '1', '3']));
  await tt.rejects(layer(dev), { message: /"\.\/null" is a device node \(chardev 1:3\)/ });
  tt.equal((await readLayer(createReadStream(dev), { what: 'dev', skipDevices: true })).skippedDevices, 1, '--skip-devices drops it');
  const dup = join(dir, 'dup.tar');
  writeFileSync(join(dir, 'src-abs', 'y'), 'y');
  execFileSync('tar', ['--format=posix', '-C', join(dir, 'src-abs'), '-cf', dup, 'y', 'y']);
  await tt.rejects(
    (async () => new LayerTree().apply((await layer(dup)).entries, 'dup'))(),
    { message: /\/y appears twice in the layer/ },
  );
  const through = layerOf('through', (r) => {
    execFileSync('ln', ['-s', '/etc', join(r, 'etc')]);
    mkdirSync(join(r, 'real'));
    writeFileSync(join(r, 'real/passwd'), 'x');
  }, ['--transform=s,^\\./real/passwd,./etc/passwd,']);
  await tt.rejects((async () => new LayerTree().apply((await layer(through)).entries, 'through'))(), { message: /\/etc\/passwd lies under \/etc, which is a symlink, not a directory/ });
  const wh = layerOf('wh', (r) => writeFileSync(join(r, '.wh...'), ''));
  await tt.rejects(layer(wh), { message: /a whiteout that names no file/ });
  const notTar = join(dir, 'not.tar');
  writeFileSync(notTar, Buffer.alloc(2048, 0x41));
  await tt.rejects(layer(notTar), { message: /not a tar archive or is corrupt/ });
});
