// README's podman recipes with the real rootless podman (4.3, runc), as a
// real user: a mountgate image as a read-only --rootfs (--for-podman), as
// the lower layer of :O, with --userns keep-id owners, an idmapped volume
// for a container user, and what a restart of podman's pause process
// (`podman system migrate`) does to the mounts. Owners, contents and writes
// are read through the kernel, inside the container and on the host. Runs
// as root: it makes the user, its runtime directory and the broker; it kills
// podman's pause process and removes podman's storage and runtime dir.
import t from 'tap';
import { chownSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, type World } from '../helpers/world.js';
import { runAs, type RunResult } from '../helpers/run-as.js';
import { cliPath } from '../helpers/paths.js';
import { makeBusyboxRoot } from '../helpers/busybox-root.js';

let world: World;
let home = '';
let runtime = '';
t.before(async () => {
  world = await createWorld({
    users: { alice: {} },
    policy: {
      version: 1,
      methods: Object.fromEntries(['AddImage', 'PutObjects', 'MountImage', 'ListImages', 'BindIdmapped'].map((m) => [m, { users: ['*'] }])),
      limits: { concurrentRequests: 4, requestsPerMinute: 100000 },
    },
  });
  const alice = world.users.alice!;
  home = world.dirs.alice!;
  // What podman 4.3 needs here (issue 10): runc, cgroupfs, events in a file.
  runtime = `/run/user/${alice.uid}`;
  mkdirSync(runtime, { recursive: true, mode: 0o700 });
  chownSync(runtime, alice.uid, alice.gid);
  mkdirSync(join(home, '.config', 'containers'), { recursive: true });
  writeFileSync(join(home, '.config', 'containers', 'containers.conf'), '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n');
  for (const p of ['.config', '.config/containers', '.config/containers/containers.conf']) chownSync(join(home, p), alice.uid, alice.gid);
  makeBusyboxRoot(join(home, 'rootfs'), alice);
  for (const d of ['ro', 'rw', 'kid', 'src', 'vol']) {
    mkdirSync(join(home, d));
    chownSync(join(home, d), alice.uid, alice.gid);
  }
  writeFileSync(join(home, 'src', 'code.txt'), 'source\n');
  chownSync(join(home, 'src', 'code.txt'), alice.uid, alice.gid);
  const add = await as(['mountgate', 'image', 'add', join(home, 'rootfs'), '--name', 'bb']);
  if (add.code !== 0) throw new Error(`image add: ${add.stderr}`);
});
t.teardown(async () => {
  const pause = (() => {
    try {
      return Number(readFileSync(join(runtime, 'libpod', 'tmp', 'pause.pid'), 'utf8'));
    } catch {
      return 0;
    }
  })();
  if (pause > 0) {
    try {
      process.kill(pause, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  if (runtime) rmSync(runtime, { recursive: true, force: true });
  await world?.teardown(); // the user's remaining processes, and the home with podman's storage in it
});

/** A command as alice in her home, with podman's environment; "mountgate" is the CLI under test. */
function as(argv: string[], timeoutMs = 180_000): Promise<RunResult> {
  const full = argv[0] === 'mountgate' ? [process.execPath, cliPath, ...argv.slice(1)] : argv;
  return runAs(world.users.alice!, full, { busAddress: world.bus.address, cwd: home, timeoutMs, env: { HOME: home, XDG_RUNTIME_DIR: runtime } });
}
const podmanRun = (args: string[]) => as(['podman', 'run', '--rm', '--network', 'none', ...args]);
/** podman's stderr without the warning every command prints here. */
const errors = (r: RunResult) => r.stderr.split('\n').filter((l) => l && !/is not a shared mount/.test(l)).join('\n');

t.test('read-only --rootfs on an image mounted --for-podman', async (t) => {
  const start = await as(['podman', 'unshare', 'true']);
  t.equal(start.code, 0, `podman's pause process starts${start.code ? `: ${errors(start)}` : ''}`);
  const m = await as(['mountgate', 'mount', 'bb', `${home}/ro`, '--into', 'podman', '--for-podman']);
  t.equal(m.code, 0, `mount exits 0${m.code ? `: ${m.stderr}` : ''}`);
  const r = await podmanRun(['--rootfs', `${home}/ro`, '/bin/sh', '-c', 'cat /data/hello; stat -c %u:%g / /data/staff; readlink /etc/mtab; touch /data/new 2>&1; mknod /dev/mine c 1 3 2>&1; true']);
  t.equal(r.code, 0, `the container runs${r.code ? `: ${errors(r)}` : ''}`);
  const lines = r.stdout.split('\n');
  t.equal(lines[0], 'hello from the image', 'the image is its root');
  t.same(lines.slice(1, 3), ['0:0', '0:42'], "root's files as 0, group 42 as 42");
  t.equal(lines[3], '/proc/mounts', 'the /etc/mtab podman wants is there');
  t.match(lines[4], /Read-only file system/, 'the image cannot be written');
  t.match(lines[5], /Operation not permitted/, 'no device node can be made');
});

t.test('--rootfs DIR:O on a plain mount: writes go to podman\'s layer, not the image', async (t) => {
  const m = await as(['mountgate', 'mount', 'bb', `${home}/rw`, '--into', 'podman']);
  t.equal(m.code, 0, `mount exits 0${m.code ? `: ${m.stderr}` : ''}`);
  const r = await podmanRun(['--rootfs', `${home}/rw:O`, '/bin/sh', '-c', 'echo written > /data/new && cat /data/new /data/hello']);
  t.equal(r.code, 0, `the container runs${r.code ? `: ${errors(r)}` : ''}`);
  t.equal(r.stdout, 'written\nhello from the image\n', 'the container writes on top of the image');
  const after = await as(['podman', 'unshare', 'ls', `${home}/rw/data`]);
  t.equal(after.stdout, 'hello\nstaff\n', 'the image itself is unchanged');
});

t.test('--userns keep-id: owners right only for an image mounted --userns keep-id', async (t) => {
  const uid = world.users.alice!.uid;
  const m = await as(['mountgate', 'mount', 'bb', `${home}/kid`, '--into', 'podman', '--for-podman', '--userns', 'keep-id']);
  t.equal(m.code, 0, `mount exits 0${m.code ? `: ${m.stderr}` : ''}`);
  const script = 'id -u; stat -c %u:%g / /data/staff; grep -c "^[^:]*:[^:]*:$(id -u):" /etc/passwd';
  const r = await podmanRun(['--userns', 'keep-id', '--rootfs', `${home}/kid`, '/bin/sh', '-c', script]);
  t.equal(r.code, 0, `the container runs${r.code ? `: ${errors(r)}` : ''}`);
  t.equal(r.stdout, `${uid}\n0:0\n0:42\n1\n`, 'you are yourself, root\'s files are 0, group 42 is 42, and podman wrote your passwd entry');
  const shifted = await podmanRun(['--userns', 'keep-id', '--rootfs', `${home}/ro`, '/bin/sh', '-c', 'stat -c %u:%g / /data/staff']);
  t.equal(shifted.stdout, `${uid}:${world.users.alice!.gid}\n${uid}:41\n`, "without it, keep-id shows the default layout shifted: root's files as you, group 42 as 41 (what the option is for)");
});

t.test('an idmapped volume: uid 1000 in the container owns ~/src, its writes land as you', async (t) => {
  const imp = await as(['sh', '-c', `tar -C ${home}/rootfs --numeric-owner --owner=0 --group=0 -c . | podman import --quiet - localhost/bb`]);
  t.equal(imp.code, 0, `podman import of the busybox tree${imp.code ? `: ${errors(imp)}` : ''}`);
  const b = await as(['mountgate', 'bind', `${home}/src`, `${home}/vol:owner=1000`, '--into', 'podman']);
  t.equal(b.code, 0, `bind exits 0${b.code ? `: ${b.stderr}` : ''}`);
  const r = await podmanRun(['--user', '1000:1000', '-v', `${home}/vol:/src`, 'localhost/bb', '/bin/sh', '-c', 'stat -c %u:%g /src/code.txt; echo made > /src/new.txt; cat /src/code.txt']);
  t.equal(r.code, 0, `the container runs${r.code ? `: ${errors(r)}` : ''}`);
  t.equal(r.stdout, '1000:1000\nsource\n', 'your file is uid 1000\'s inside');
  const made = statSync(join(home, 'src', 'new.txt'));
  t.same([made.uid, made.gid], [world.users.alice!.uid, world.users.alice!.gid], 'what uid 1000 wrote is yours on the host');
});

t.test('a restart of the pause process: ls says what was lost, --reattach brings it back', async (t) => {
  const before = JSON.parse((await as(['mountgate', 'ls', '--into', 'podman', '--json'])).stdout) as { state: string; dir: string }[];
  t.same(before.map((r) => r.state), ['attached', 'attached', 'attached', 'attached'], 'four mounts attached');
  const migrate = await as(['podman', 'system', 'migrate']);
  t.equal(migrate.code, 0, `podman system migrate${migrate.code ? `: ${errors(migrate)}` : ''}`);
  await as(['podman', 'unshare', 'true']);
  const ls = await as(['mountgate', 'ls', '--into', 'podman']);
  t.match(ls.stdout, new RegExp(`lost +${home}/ro `), 'ls names the lost mounts');
  t.match(ls.stdout, /4 lost with podman's earlier pause process: `mountgate ls --into podman --reattach`/, ls.stdout.trim());
  const gone = await podmanRun(['--rootfs', `${home}/ro`, '/bin/sh', '-c', 'true']);
  t.not(gone.code, 0, 'podman cannot use the directory: the mount went with the old namespace');
  const note = await as(['mountgate', 'mount', 'bb', `${home}/rw`, '--into', 'podman']);
  t.match(note.stderr, /4 mount\(s\) attached in podman's namespace before its pause process was replaced are gone/, 'the next mountgate command says so too');
  const again = await as(['mountgate', 'ls', '--into', 'podman', '--reattach', '--json']);
  t.equal(again.code, 0, `--reattach exits 0${again.code ? `: ${again.stderr}` : ''}`);
  t.same((JSON.parse(again.stdout.trim().split('\n').pop()!) as { state: string }[]).map((r) => r.state), ['attached', 'attached', 'attached', 'attached'], 'all attached again');
  const r = await podmanRun(['--rootfs', `${home}/ro`, '/bin/cat', '/data/hello']);
  t.equal(r.stdout, 'hello from the image\n', `and podman runs on it again${r.code ? `: ${errors(r)}` : ''}`);
});
