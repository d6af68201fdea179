// README's podman recipes with the real rootless podman (4.3), each run with runc (as alice) and with crun (as bob), as a
// real user: a mountgate image as a read-only --rootfs (--for-podman), as
// the lower layer of :O, with --userns keep-id owners, an idmapped volume
// for a container user, and what a restart of podman's pause process
// (`podman system migrate`) does to the mounts. Owners, contents and writes
// are read through the kernel, inside the container and on the host. Runs
// as root: it makes the user, its runtime directory and the broker; it kills
// podman's pause process and removes podman's storage and runtime dir.
import t from 'tap';
import { execFile } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, type World } from '../helpers/world.js';
import { runAs, type RunResult } from '../helpers/run-as.js';
import { cliPath } from '../helpers/paths.js';
import { makeBusyboxRoot } from '../helpers/busybox-root.js';
import type { TestUser } from '../helpers/users.js';

let world: World;
/** One rootless podman user per OCI runtime: alice runs the recipes with runc, bob with crun. */
interface Podman {
  user: TestUser;
  runtime: 'runc' | 'crun';
  home: string;
  /** Its $XDG_RUNTIME_DIR. */
  run: string;
}
const podmen: Podman[] = [];

t.before(async () => {
  world = await createWorld({
    users: { alice: {}, bob: {} },
    policy: {
      version: 1,
      methods: Object.fromEntries(['AddImage', 'PutObjects', 'MountImage', 'ListImages', 'BindIdmapped'].map((m) => [m, { users: ['*'] }])),
      limits: { concurrentRequests: 4, requestsPerMinute: 100000 },
    },
  });
  for (const [name, runtime] of [['alice', 'runc'], ['bob', 'crun']] as const) {
    const user = world.users[name]!;
    const p: Podman = { user, runtime, home: world.dirs[name]!, run: `/run/user/${user.uid}` };
    podmen.push(p);
    mkdirSync(p.run, { recursive: true, mode: 0o700 });
    chownSync(p.run, user.uid, user.gid);
    // What podman 4.3 needs here (issue 10): cgroupfs, events in a file; the runtime is the one under test.
    mkdirSync(join(p.home, '.config', 'containers'), { recursive: true });
    writeFileSync(join(p.home, '.config', 'containers', 'containers.conf'), `[engine]\nruntime = "${runtime}"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n`);
    for (const d of ['.config', '.config/containers', '.config/containers/containers.conf']) chownSync(join(p.home, d), user.uid, user.gid);
    makeBusyboxRoot(join(p.home, 'rootfs'), user);
    for (const d of ['ro', 'rw', 'kid', 'kid1000', 'src', 'vol']) {
      mkdirSync(join(p.home, d));
      chownSync(join(p.home, d), user.uid, user.gid);
    }
    writeFileSync(join(p.home, 'src', 'code.txt'), 'source\n');
    chownSync(join(p.home, 'src', 'code.txt'), user.uid, user.gid);
    const add = await as(p, ['mountgate', 'image', 'add', join(p.home, 'rootfs'), '--name', 'bb']);
    if (add.code !== 0) throw new Error(`image add: ${add.stderr}`);
  }
});
t.teardown(async () => {
  for (const p of podmen) {
    const pause = (() => {
      try {
        return Number(readFileSync(join(p.run, 'libpod', 'tmp', 'pause.pid'), 'utf8'));
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
    rmSync(p.run, { recursive: true, force: true });
  }
  await world?.teardown(); // the users' remaining processes, and the homes with podman's storage in them
});

/** A command as the user in its home, with podman's environment; "mountgate" is the CLI under test. */
function as(p: Podman, argv: string[], timeoutMs = 180_000): Promise<RunResult> {
  const full = argv[0] === 'mountgate' ? [process.execPath, cliPath, ...argv.slice(1)] : argv;
  return runAs(p.user, full, { busAddress: world.bus.address, cwd: p.home, timeoutMs, env: { HOME: p.home, XDG_RUNTIME_DIR: p.run } });
}
const podmanRun = (p: Podman, args: string[]) => as(p, ['podman', 'run', '--rm', '--network', 'none', ...args]);
/** podman's stderr without the warning every command prints here. */
const errors = (r: RunResult) => r.stderr.split('\n').filter((l) => l && !/is not a shared mount/.test(l)).join('\n');

/**
 * Starts the user's pause process. crun 1.8.1 refuses to run on a host with
 * hybrid cgroups whose cgroup2 hierarchy holds a controller ("cgroups in
 * hybrid mode not supported, drop all controllers from cgroupv2"), as this
 * one does (hugetlb); in a mount namespace without /sys/fs/cgroup/unified it
 * sees cgroup v1 only and runs. Every later podman command of the user runs
 * its containers in the namespace the pause process made from that one, so
 * for crun the pause process is started there, by root, as the user.
 */
async function startPodman(p: Podman): Promise<RunResult> {
  if (p.runtime === 'runc' || !existsSync('/sys/fs/cgroup/unified')) return as(p, ['podman', 'unshare', 'true']);
  const u = p.user;
  const asUser = ['env', '-u', 'NODE_OPTIONS', `HOME=${p.home}`, `XDG_RUNTIME_DIR=${p.run}`, 'setpriv', `--reuid=${u.uid}`, `--regid=${u.gid}`, '--init-groups', '--', 'podman', 'unshare', 'true'];
  return new Promise((resolve) => {
    execFile('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', 'umount /sys/fs/cgroup/unified && cd "$0" && exec "$@"', p.home, ...asUser], { encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, signal: null, stdout, stderr });
    });
  });
}

for (const p of [{ runtime: 'runc', k: 0 }, { runtime: 'crun', k: 1 }] as const) {
  const pm = () => podmen[p.k]!;
  t.test(`${p.runtime}: read-only --rootfs on an image mounted --for-podman`, async (t) => {
    const { home } = pm();
    const start = await startPodman(pm());
    t.equal(start.code, 0, `podman's pause process starts${start.code ? `: ${errors(start)}` : ''}`);
    const info = await as(pm(), ['podman', 'info', '--format', '{{.Host.OCIRuntime.Name}}']);
    t.equal(info.stdout.trim(), p.runtime, `podman runs its containers with ${p.runtime}`);
    const m = await as(pm(), ['mountgate', 'mount', 'bb', `${home}/ro`, '--into', 'podman', '--for-podman']);
    t.equal(m.code, 0, `mount exits 0${m.code ? `: ${m.stderr}` : ''}`);
    const r = await podmanRun(pm(), ['--rootfs', `${home}/ro`, '/bin/sh', '-c', 'cat /data/hello; stat -c %u:%g / /data/staff; readlink /etc/mtab; touch /data/new 2>&1; mknod /dev/mine c 1 3 2>&1; true']);
    t.equal(r.code, 0, `the container runs${r.code ? `: ${errors(r)}` : ''}`);
    const lines = r.stdout.split('\n');
    t.equal(lines[0], 'hello from the image', 'the image is its root');
    t.same(lines.slice(1, 3), ['0:0', '0:42'], "root's files as 0, group 42 as 42");
    t.equal(lines[3], '/proc/mounts', 'the /etc/mtab podman wants is there');
    t.match(lines[4], /Read-only file system/, 'the image cannot be written');
    t.match(lines[5], /Operation not permitted/, 'no device node can be made');
  });

  t.test(`${p.runtime}: --rootfs DIR:O on a plain mount: writes go to podman's layer, not the image`, async (t) => {
    const { home } = pm();
    const m = await as(pm(), ['mountgate', 'mount', 'bb', `${home}/rw`, '--into', 'podman']);
    t.equal(m.code, 0, `mount exits 0${m.code ? `: ${m.stderr}` : ''}`);
    const r = await podmanRun(pm(), ['--rootfs', `${home}/rw:O`, '/bin/sh', '-c', 'echo written > /data/new && cat /data/new /data/hello']);
    t.equal(r.code, 0, `the container runs${r.code ? `: ${errors(r)}` : ''}`);
    t.equal(r.stdout, 'written\nhello from the image\n', 'the container writes on top of the image');
    const after = await as(pm(), ['podman', 'unshare', 'ls', `${home}/rw/data`]);
    t.equal(after.stdout, 'hello\nstaff\n', 'the image itself is unchanged');
  });

  t.test(`${p.runtime}: --userns keep-id: owners right only for an image mounted --userns keep-id`, async (t) => {
    const { home, user } = pm();
    const m = await as(pm(), ['mountgate', 'mount', 'bb', `${home}/kid`, '--into', 'podman', '--for-podman', '--userns', 'keep-id']);
    t.equal(m.code, 0, `mount exits 0${m.code ? `: ${m.stderr}` : ''}`);
    const script = 'id -u; stat -c %u:%g / /data/staff; grep -c "^[^:]*:[^:]*:$(id -u):" /etc/passwd';
    const r = await podmanRun(pm(), ['--userns', 'keep-id', '--rootfs', `${home}/kid`, '/bin/sh', '-c', script]);
    t.equal(r.code, 0, `the container runs${r.code ? `: ${errors(r)}` : ''}`);
    t.equal(r.stdout, `${user.uid}\n0:0\n0:42\n1\n`, 'you are yourself, root\'s files are 0, group 42 is 42, and podman wrote your passwd entry');
    const shifted = await podmanRun(pm(), ['--userns', 'keep-id', '--rootfs', `${home}/ro`, '/bin/sh', '-c', 'stat -c %u:%g / /data/staff']);
    t.equal(shifted.stdout, `${user.uid}:${user.gid}\n${user.uid}:41\n`, "without it, keep-id shows the default layout shifted: root's files as you, group 42 as 41 (what the option is for)");
  });

  t.test(`${p.runtime}: --userns keep-id:uid=1000,gid=1000: you are 1000, the image's owners are right`, async (t) => {
    const { home } = pm();
    const userns = 'keep-id:uid=1000,gid=1000';
    const m = await as(pm(), ['mountgate', 'mount', 'bb', `${home}/kid1000`, '--into', 'podman', '--for-podman', '--userns', userns]);
    t.equal(m.code, 0, `mount exits 0${m.code ? `: ${m.stderr}` : ''}`);
    const r = await podmanRun(pm(), ['--userns', userns, '--rootfs', `${home}/kid1000`, '/bin/sh', '-c', 'id -u; id -g; stat -c %u:%g / /data/staff /bin/busybox']);
    t.equal(r.code, 0, `the container runs${r.code ? `: ${errors(r)}` : ''}`);
    t.equal(r.stdout, '1000\n1000\n0:0\n0:42\n0:0\n', "you are 1000:1000, root's files are 0, group 42 is 42");
    const bad = await as(pm(), ['mountgate', 'mount', 'bb', `${home}/kid1000`, '--into', 'podman', '--userns', 'keep-id:uid=me']);
    t.equal(bad.code, 2, 'a --userns value podman would not take is a usage error');
    t.match(bad.stderr, /"uid=me" is not uid=N or gid=N/, bad.stderr.trim());
  });

  t.test(`${p.runtime}: an idmapped volume: uid 1000 in the container owns ~/src, its writes land as you`, async (t) => {
    const { home, user } = pm();
    const imp = await as(pm(), ['sh', '-c', `tar -C ${home}/rootfs --numeric-owner --owner=0 --group=0 -c . | podman import --quiet - localhost/bb`]);
    t.equal(imp.code, 0, `podman import of the busybox tree${imp.code ? `: ${errors(imp)}` : ''}`);
    const b = await as(pm(), ['mountgate', 'bind', `${home}/src`, `${home}/vol:owner=1000`, '--into', 'podman']);
    t.equal(b.code, 0, `bind exits 0${b.code ? `: ${b.stderr}` : ''}`);
    const r = await podmanRun(pm(), ['--user', '1000:1000', '-v', `${home}/vol:/src`, 'localhost/bb', '/bin/sh', '-c', 'stat -c %u:%g /src/code.txt; echo made > /src/new.txt; cat /src/code.txt']);
    t.equal(r.code, 0, `the container runs${r.code ? `: ${errors(r)}` : ''}`);
    t.equal(r.stdout, '1000:1000\nsource\n', 'your file is uid 1000\'s inside');
    const made = statSync(join(home, 'src', 'new.txt'));
    t.same([made.uid, made.gid], [user.uid, user.gid], 'what uid 1000 wrote is yours on the host');
  });
}

t.test('a restart of the pause process: ls says what was lost, --reattach brings it back', async (t) => {
  const alice = podmen[0]!;
  const { home } = alice;
  const before = JSON.parse((await as(alice, ['mountgate', 'ls', '--into', 'podman', '--json'])).stdout) as { state: string; dir: string }[];
  t.same(before.map((r) => r.state), ['attached', 'attached', 'attached', 'attached', 'attached'], 'five mounts attached');
  const migrate = await as(alice, ['podman', 'system', 'migrate']);
  t.equal(migrate.code, 0, `podman system migrate${migrate.code ? `: ${errors(migrate)}` : ''}`);
  await as(alice, ['podman', 'unshare', 'true']);
  const ls = await as(alice, ['mountgate', 'ls', '--into', 'podman']);
  t.match(ls.stdout, new RegExp(`lost +${home}/ro `), 'ls names the lost mounts');
  t.match(ls.stdout, /5 lost with podman's earlier pause process: `mountgate ls --into podman --reattach`/, ls.stdout.trim());
  const gone = await podmanRun(alice, ['--rootfs', `${home}/ro`, '/bin/sh', '-c', 'true']);
  t.not(gone.code, 0, 'podman cannot use the directory: the mount went with the old namespace');
  const note = await as(alice, ['mountgate', 'mount', 'bb', `${home}/rw`, '--into', 'podman']);
  t.match(note.stderr, /5 mount\(s\) attached in podman's namespace before its pause process was replaced are gone/, 'the next mountgate command says so too');
  const again = await as(alice, ['mountgate', 'ls', '--into', 'podman', '--reattach', '--json']);
  t.equal(again.code, 0, `--reattach exits 0${again.code ? `: ${again.stderr}` : ''}`);
  t.same((JSON.parse(again.stdout.trim().split('\n').pop()!) as { state: string }[]).map((r) => r.state), ['attached', 'attached', 'attached', 'attached', 'attached'], 'all attached again');
  const r = await podmanRun(alice, ['--rootfs', `${home}/ro`, '/bin/cat', '/data/hello']);
  t.equal(r.stdout, 'hello from the image\n', `and podman runs on it again${r.code ? `: ${errors(r)}` : ''}`);
});
