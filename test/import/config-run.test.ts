// `mountgate run --image NAME` runs what an imported container image says to
// run, as podman would: its Entrypoint, then the command given or else its
// Cmd, in its WorkingDir, with its Env, as its User. The image is made by
// podman (as root, in a private store) from a busybox root filesystem, saved
// as a docker-archive and imported by a real user through a real broker.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, symlinkSync, copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, type World } from '../helpers/world.js';
import { runAs, type RunResult } from '../helpers/run-as.js';
import { cliPath } from '../helpers/paths.js';

let world: World;
t.before(async () => {
  world = await createWorld({
    users: { alice: {} },
    policy: {
      version: 1,
      methods: Object.fromEntries(['AddImage', 'PutObjects', 'MountImage', 'ListImages', 'RemoveImage'].map((m) => [m, { users: ['*'] }])),
      limits: { concurrentRequests: 4, requestsPerMinute: 100000 },
    },
  });
});
t.teardown(() => world?.teardown());

const data = () => join(world.dirs.alice!, 'data');
const cli = (args: string[]): Promise<RunResult> =>
  runAs(world.users.alice!, [process.execPath, cliPath, ...args], { busAddress: world.bus.address, env: { XDG_DATA_HOME: data() }, timeoutMs: 120_000 });

/** A docker-archive of a busybox root filesystem with the given config changes (Dockerfile lines). */
function savedImage(name: string, changes: string[]): string {
  const store = join(world.scratch, `podman-${name}`);
  const rootfs = join(store, 'rootfs');
  for (const d of ['bin', 'etc', 'srv', 'tmp']) mkdirSync(join(rootfs, d), { recursive: true });
  copyFileSync('/bin/busybox', join(rootfs, 'bin/busybox'));
  chmodSync(join(rootfs, 'bin/busybox'), 0o755);
  for (const tool of ['sh', 'id', 'pwd', 'echo', 'cat']) symlinkSync('busybox', join(rootfs, 'bin', tool));
  writeFileSync(join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/srv:/bin/sh\n');
  writeFileSync(join(rootfs, 'etc/group'), 'root:x:0:\napp:x:1001:\n');
  const tar = join(store, 'rootfs.tar');
  execFileSync('tar', ['-C', rootfs, '-cf', tar, '.']);
  const podman = (args: string[]) => execFileSync('podman', ['--root', join(store, 'storage'), '--runroot', join(store, 'run'), '--storage-driver', 'vfs', '--events-backend', 'file', '--cgroup-manager', 'cgroupfs', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  podman(['import', ...changes.flatMap((c) => ['--change', c]), tar, `localhost/${name}:1`]);
  const saved = join(world.scratch, `${name}.tar`);
  podman(['save', '-o', saved, `localhost/${name}:1`]);
  podman(['rmi', '-a', '-f']);
  chmodSync(saved, 0o644);
  return saved;
}

t.test('no command: the image\'s Cmd, in its WorkingDir, with its Env, as its User', async (t) => {
  const saved = savedImage('app', ['CMD ["/bin/sh", "-c", "echo from-cmd; id -u; id -g; pwd; echo $GREETING; echo $HOME"]', 'WORKDIR /srv', 'ENV GREETING=hello', 'USER app']);
  const add = await cli(['image', 'add', `docker-archive:${saved}`, '--name', 'app']);
  t.equal(add.code, 0, `image add exits 0${add.code ? `: ${add.stderr}` : ''}`);
  const r = await cli(['run', '--image', 'app']);
  t.equal(r.code, 0, `run exits 0${r.code ? `: ${r.stderr}` : ''}`);
  t.equal(r.stdout, 'from-cmd\n1000\n1001\n/srv\nhello\n/srv\n', 'Cmd ran as app (1000:1001) in /srv with GREETING, HOME from its passwd entry');
  const given = await cli(['run', '--image', 'app', '--', '/bin/sh', '-c', 'echo given; id -u']);
  t.equal(given.stdout, 'given\n1000\n', 'a command given replaces Cmd (no Entrypoint), still as the image\'s user');
});

t.test('an Entrypoint comes first, and the command given becomes its arguments', async (t) => {
  const saved = savedImage('ep', ['ENTRYPOINT ["/bin/echo", "entry:"]', 'CMD ["default"]']);
  const add = await cli(['image', 'add', `docker-archive:${saved}`, '--name', 'ep']);
  t.equal(add.code, 0, `image add exits 0${add.code ? `: ${add.stderr}` : ''}`);
  t.equal((await cli(['run', '--image', 'ep'])).stdout, 'entry: default\n', 'Entrypoint + Cmd');
  t.equal((await cli(['run', '--image', 'ep', '--', 'given', 'args'])).stdout, 'entry: given args\n', 'Entrypoint + the arguments given');
});

t.test('an image without a config needs a command, and says so', async (t) => {
  const tree = join(world.dirs.alice!, 'plain');
  mkdirSync(tree);
  execFileSync('chown', [`${world.users.alice!.uid}:${world.users.alice!.gid}`, tree]);
  const add = await cli(['image', 'add', tree, '--name', 'plain']);
  t.equal(add.code, 0, `image add exits 0${add.code ? `: ${add.stderr}` : ''}`);
  const r = await cli(['run', '--image', 'plain']);
  t.equal(r.code, 2, 'a usage error');
  t.match(r.stderr, /give the command to run after --: the image has no config/, r.stderr.trim());
  const nothing = await cli(['run']);
  t.equal(nothing.code, 2, 'no image at / and no command: a usage error');
  t.match(nothing.stderr, /give the command to run after --/);
});
