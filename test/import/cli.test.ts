// Archives end to end: a user imports a layer tarball (a file, and zstd on a
// pipe) through the CLI into a real broker, mounts it with `run --image` and
// reads every file back through the kernel; a second import uploads nothing;
// an interrupted import leaves nothing registered.
import t from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import { chownSync, lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { createWorld, type World } from '../helpers/world.js';
import { runAs, type RunResult } from '../helpers/run-as.js';
import { cliPath } from '../helpers/paths.js';
import type { TestUser } from '../helpers/users.js';
import { buildTree, longName, makeTar } from './fixtures.js';

let world: World;
let tree = '';
let layer = '';
t.before(async () => {
  world = await createWorld({
    users: { alice: {} },
    policy: {
      version: 1,
      methods: { AddImage: { users: ['*'] }, PutObjects: { users: ['*'] }, ProveObjects: { users: ['*'] }, MountImage: { users: ['*'] }, ListImages: { users: ['*'] }, RemoveImage: { users: ['*'] } },
      limits: { concurrentRequests: 4, requestsPerMinute: 100000 },
    },
  });
  tree = join(world.scratch, 'tree');
  buildTree(tree);
  layer = join(world.scratch, 'layer.tar');
  makeTar(tree, layer, 'posix');
  execFileSync('zstd', ['-q', layer, '-o', `${layer}.zst`]);
});
t.teardown(() => world?.teardown());

function cli(user: TestUser, args: string[], opts: { stdinFile?: string } = {}): Promise<RunResult> {
  const argv = [process.execPath, cliPath, ...args];
  if (opts.stdinFile) return runAs(user, ['sh', '-c', `cat "$0" | exec "$@"`, opts.stdinFile, ...argv], { busAddress: world.bus.address, timeoutMs: 120_000 });
  return runAs(user, argv, { busAddress: world.bus.address, timeoutMs: 120_000 });
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

t.test('image add layer.tar: mounted, every file reads back through the kernel as the tree has it', async (tt) => {
  const alice = world.users.alice!;
  const r = await cli(alice, ['image', 'add', layer, '--json']);
  tt.equal(r.code, 0, `image add exits 0 (stderr: ${r.stderr})`);
  const out = JSON.parse(r.stdout) as { id: string; uploaded: { objects: number; bytes: number }; proven: { objects: number; bytes: number }; diffId: string; compression: string };
  tt.match(out, { compression: 'none', diffId: `sha256:${sha256(readFileSync(layer))}` });
  tt.ok(out.proven.objects >= 6, `the contents went to the broker as the archive was read, ProveObjects (${out.proven.objects} objects)`);
  tt.equal(out.uploaded.objects, 0, 'so nothing was left to upload after AddImage');

  const again = await cli(alice, ['image', 'add', layer, '--json']);
  tt.equal(again.code, 0, `again (stderr: ${again.stderr})`);
  tt.match(JSON.parse(again.stdout), { id: out.id, uploaded: { objects: 0, bytes: 0 } }, 'the same image, nothing uploaded');

  const mnt = join(world.dirs.alice!, 'mnt');
  mkdirSync(mnt);
  chownSync(mnt, alice.uid, alice.gid);
  const files = ['etc/hostname', 'etc/owned', 'etc/empty', 'usr/bin/tool', 'usr/bin/tool-again', 'sparse.img', longName, 'hard-to-deep', 'long-link'];
  const script = [
    `cd ${mnt}`,
    `stat -c '%n|%F|%u|%g|%a|%s|%h|%Y' ${files.join(' ')} etc/fifo usr/hostname-link tmp`,
    `sha256sum ${files.join(' ')}`,
    'readlink usr/hostname-link long-link',
    'getfattr -h -d -m - -e hex etc/hostname usr/bin/tool',
  ].join(' && ');
  const run = await cli(alice, ['run', '--image', `layer:${mnt}`, '--', 'sh', '-c', script]);
  tt.equal(run.code, 0, `run exits 0 (stderr: ${run.stderr})`);
  for (const f of [...files, 'etc/fifo', 'usr/hostname-link', 'tmp']) {
    const st = lstatSync(join(tree, f));
    const type = st.isDirectory() ? 'directory' : st.isSymbolicLink() ? 'symbolic link' : st.isFIFO() ? 'fifo' : st.size === 0 ? 'regular empty file' : 'regular file';
    const line = run.stdout.split('\n').find((l) => l.startsWith(`${f}|`));
    const size = st.isDirectory() ? '\\d+' : String(st.size);
    tt.match(line, new RegExp(`^${f}\\|${type}\\|${st.uid}\\|${st.gid}\\|${(st.mode & 0o7777).toString(8)}\\|${size}\\|${st.isDirectory() ? '\\d+' : st.nlink}\\|${Math.floor(st.mtimeMs / 1000)}$`), `${f}: type, owner, mode, size, links and mtime as in the tree`);
    if (st.isFile()) tt.match(run.stdout, `${sha256(readFileSync(join(tree, f)))}  ${f}`, `${f}: contents`);
  }
  tt.match(run.stdout, '../etc/hostname\n', 'symlink target');
  tt.match(run.stdout, /user\.comment=0x68656c6c6f207861747472/, 'user xattr through the kernel');
  tt.match(run.stdout, /security\.capability=0x01000002/, 'file capability through the kernel');
});

t.test('image add - : a zstd layer on a pipe, contents from memory', async (tt) => {
  const alice = world.users.alice!;
  // Contents of its own (an image with the same contents as another would keep the other's name).
  const src = join(world.scratch, 'piped');
  mkdirSync(join(src, 'etc'), { recursive: true });
  const hostname = `piped ${randomBytes(8).toString('hex')}\n`;
  writeFileSync(join(src, 'etc/hostname'), hostname);
  writeFileSync(join(src, 'random.bin'), randomBytes(300_000));
  execFileSync('sh', ['-c', `tar -C ${src} -cf - . | zstd -q > ${src}.tar.zst`]);
  const r = await cli(alice, ['image', 'add', '-', '--name', 'piped', '--json'], { stdinFile: `${src}.tar.zst` });
  tt.equal(r.code, 0, `exits 0 (stderr: ${r.stderr})`);
  const out = JSON.parse(r.stdout) as { id: string; compression: string; uploaded: { objects: number } };
  tt.equal(out.compression, 'zstd');
  tt.equal(out.uploaded.objects, 2, 'both contents uploaded, from memory');
  const mnt = join(world.dirs.alice!, 'mnt');
  const run = await cli(alice, ['run', '--image', `piped:${mnt}`, '--', 'sh', '-c', `cat ${mnt}/etc/hostname && sha256sum ${mnt}/random.bin`]);
  tt.equal(run.code, 0, `run exits 0 (stderr: ${run.stderr})`);
  tt.equal(run.stdout, `${hostname}${sha256(readFileSync(join(src, 'random.bin')))}  ${mnt}/random.bin\n`);
  const small = await cli(alice, ['image', 'add', '-', '--name', 'toobig', '--memory', '0.01'], { stdinFile: `${src}.tar.zst` });
  tt.equal(small.code, 6, 'more contents than --memory allows: a limit error');
  tt.match(small.stderr, /keep in memory; give the archive as a file/);
});

t.test('image add docker-archive:FILE (podman save): mounted and read through the kernel; the config kept beside it', async (tt) => {
  const alice = world.users.alice!;
  const store = join(world.scratch, 'podman');
  const podman = (args: string[]) => execFileSync('podman', ['--root', join(store, 'storage'), '--runroot', join(store, 'run'), '--storage-driver', 'vfs', '--events-backend', 'file', '--cgroup-manager', 'cgroupfs', ...args], { encoding: 'utf8' });
  // Go's archive/tar (podman) cannot write GNU sparse files back: this layer stores the sparse file whole.
  const rootfs = join(store, 'rootfs.tar');
  mkdirSync(store);
  execFileSync('tar', ['--format=posix', '--xattrs', '--xattrs-include=*', '--sort=name', '-C', tree, '-cf', rootfs, '.']);
  podman(['import', '--change', 'CMD ["/bin/cat","/etc/hostname"]', '--change', 'WORKDIR /etc', rootfs, 'localhost/mgapp:1']);
  const saved = join(world.scratch, 'saved.tar');
  podman(['save', '-o', saved, 'localhost/mgapp:1']);
  podman(['rmi', '-a', '-f']);
  execFileSync('chmod', ['0644', saved]);
  const data = join(world.dirs.alice!, 'data');
  const r = await runAs(alice, [process.execPath, cliPath, 'image', 'add', `docker-archive:${saved}`, '--name', 'app', '--json'], { busAddress: world.bus.address, env: { XDG_DATA_HOME: data }, timeoutMs: 120_000 });
  tt.equal(r.code, 0, `image add exits 0 (stderr: ${r.stderr})`);
  const out = JSON.parse(r.stdout) as { id: string; config: unknown; layers: { diffId: string }[] };
  tt.same(out.config, { Cmd: ['/bin/cat', '/etc/hostname'], WorkingDir: '/etc' });
  tt.equal(out.layers[0]!.diffId, `sha256:${sha256(readFileSync(rootfs))}`, 'the diff ID: the tarball podman imported, byte for byte');
  tt.match(JSON.parse(readFileSync(join(data, 'mountgate/images/names/app.json'), 'utf8')), { name: 'app', imageId: out.id, source: `docker-archive:${saved}`, config: out.config });
  const mnt = join(world.dirs.alice!, 'mnt');
  // By id: the tree is the one of layer.tar, imported before under another name (the broker keeps one name per image: it is app's now).
  const run = await cli(alice, ['run', '--image', `${out.id}:${mnt}`, '--', 'sh', '-c', `cat ${mnt}/etc/hostname && stat -c '%u:%g %a' ${mnt}/etc/owned ${mnt}/usr/bin/tool && sha256sum ${mnt}/sparse.img`]);
  tt.equal(run.code, 0, `run exits 0 (stderr: ${run.stderr})`);
  tt.equal(run.stdout, `layer\n1234:5678 644\n0:0 4755\n${sha256(readFileSync(join(tree, 'sparse.img')))}  ${mnt}/sparse.img\n`);
});

t.test('Ctrl-C during the import: the image is not left registered, nothing is held', async (tt) => {
  const alice = world.users.alice!;
  const big = join(world.dirs.alice!, 'big');
  mkdirSync(big);
  execFileSync('sh', ['-c', `head -c 400000000 /dev/urandom > ${big}/blob && tar -C ${big} -cf ${big}.tar blob && chown -R ${alice.uid} ${big} ${big}.tar`]);
  const child = spawn('setpriv', [`--reuid=${alice.uid}`, `--regid=${alice.gid}`, '--clear-groups', 'env', '-u', 'NODE_OPTIONS', `MOUNTGATE_BUS_ADDRESS=${world.bus.address}`, process.execPath, cliPath, 'image', 'add', `${big}.tar`, '--name', 'interrupted', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    // Its one content (400 MB, too big to prove as it is read) is hashed as the archive is read, then uploaded: either phase will do.
    const read = [...stderr.matchAll(/"event":"read","entries":\d+,"bytes":(\d+)/g)].map((m) => Number(m[1]));
    if ((read.some((n) => n >= 100_000_000) || /"event":"upload"/.test(stderr)) && !child.killed) child.kill('SIGINT');
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  tt.not(code, 0, `the import stops (stderr: ${stderr.slice(-300)})`);
  const ls = await cli(alice, ['image', 'ls', '--json']);
  tt.notOk((JSON.parse(ls.stdout) as { name?: string }[]).some((i) => i.name === 'interrupted'), 'no image named interrupted');
  const tmp = join(world.broker.stateDir, 'store', 'tmp');
  for (let i = 0; i < 50 && readdirSync(tmp).some((f) => f.startsWith(`${alice.uid}-`)); i++) await new Promise((r) => setTimeout(r, 100));
  tt.same(readdirSync(tmp).filter((f) => f.startsWith(`${alice.uid}-`)), [], 'no copy of it held in the store');
});
