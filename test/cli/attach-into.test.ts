// `mountgate mount`, `bind` and `umount` into a user+mount namespace that
// already exists (a container's, podman's pause process's): as a real user,
// against a real broker, with the mounts read back through the kernel from
// inside that namespace. The "container" is a process alice keeps in a
// namespace of her own with podman's layout (her uid as 0, her subordinate
// ids as 1..). Runs as root: it makes the users and starts the broker.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { chownSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, type World } from '../helpers/world.js';
import { runAs, type RunResult } from '../helpers/run-as.js';
import { cliPath } from '../helpers/paths.js';
import type { TestUser } from '../helpers/users.js';

let world: World;
let holder: ChildProcess | undefined;
t.before(async () => {
  world = await createWorld({
    users: { alice: {}, bob: {} },
    policy: {
      version: 1,
      methods: Object.fromEntries(['AddImage', 'PutObjects', 'MountImage', 'ListImages', 'BindIdmapped'].map((m) => [m, { users: ['*'] }])),
      limits: { concurrentRequests: 4, requestsPerMinute: 100000 },
    },
  });
});
t.teardown(async () => {
  holder?.kill('SIGKILL');
  await world?.teardown();
});

const cli = (user: TestUser, args: string[], prefix: string[] = []): Promise<RunResult> =>
  runAs(user, [...prefix, process.execPath, cliPath, ...args], { busAddress: world.bus.address, timeoutMs: 120_000 });
/** A command inside the holder's namespaces, as alice. */
const inside = (pid: number, argv: string[]) => runAs(world.users.alice!, ['nsenter', '--user', '--mount', '--preserve-credentials', `--target=${pid}`, '--', ...argv], { busAddress: world.bus.address });

let pid = 0;
let mnt = '';
let vol = '';
t.before(async () => {
  const alice = world.users.alice!;
  const tree = join(world.dirs.alice!, 'tree');
  mkdirSync(tree);
  writeFileSync(join(tree, 'hello'), 'hello from the image\n');
  chownSync(tree, alice.uid, alice.gid);
  chownSync(join(tree, 'hello'), alice.uid, alice.gid);
  const add = await cli(alice, ['image', 'add', tree, '--name', 'img']);
  if (add.code !== 0) throw new Error(`image add: ${add.stderr}`);
  mnt = join(world.dirs.alice!, 'mnt');
  vol = join(world.dirs.alice!, 'vol');
  for (const d of [mnt, vol, join(world.dirs.alice!, 'src')]) {
    mkdirSync(d);
    chownSync(d, alice.uid, alice.gid);
  }
  writeFileSync(join(world.dirs.alice!, 'src', 'code.txt'), 'source\n');
  chownSync(join(world.dirs.alice!, 'src', 'code.txt'), alice.uid, alice.gid);
  // podman's layout, as newuidmap writes it for util-linux's unshare (--map-users=OUTER,INNER,COUNT).
  holder = spawn('env', ['-u', 'NODE_OPTIONS', 'setpriv', `--reuid=${alice.uid}`, `--regid=${alice.gid}`, '--init-groups', '--',
    'unshare', '--user', '--map-root-user', `--map-users=${alice.subuid.start},1,${alice.subuid.count}`, `--map-groups=${alice.subgid.start},1,${alice.subgid.count}`,
    '--mount', '--propagation', 'private', '--', 'sleep', '600'], { stdio: 'ignore', cwd: '/' });
  // unshare execs sleep once the maps are written: the holder is ready when its uid_map is podman-shaped.
  for (let k = 0; k < 100 && !pid; k++) {
    await new Promise((r) => setTimeout(r, 50));
    try {
      if (readFileSync(`/proc/${holder.pid}/uid_map`, 'utf8').trim().split('\n').length === 2 && readFileSync(`/proc/${holder.pid}/comm`, 'utf8').trim() === 'sleep') pid = holder.pid!;
    } catch {
      // not yet
    }
  }
  if (!pid) throw new Error('the namespace holder did not come up');
});

t.test('mount IMAGE DIR --into PID: the image is attached in that namespace only', async (t) => {
  const r = await cli(world.users.alice!, ['mount', 'img', mnt, '--into', String(pid), '--json']);
  t.equal(r.code, 0, `exits 0${r.code ? `: ${r.stderr}` : ''}`);
  t.match(JSON.parse(r.stdout), { dir: mnt, into: pid }, 'says where');
  const read = await inside(pid, ['sh', '-c', `cat ${mnt}/hello; stat -c %u ${mnt}/hello`]);
  t.equal(read.stdout, 'hello from the image\n0\n', 'inside: the file reads through the mount, owned by 0 (alice)');
  t.notOk(statSync(join(mnt, 'hello'), { throwIfNoEntry: false }), 'the host\'s directory is untouched');
});

t.test('bind SRC DIR:owner=1000 --into PID: an idmapped bind in the target\'s own terms', async (t) => {
  const src = join(world.dirs.alice!, 'src');
  const r = await cli(world.users.alice!, ['bind', src, `${vol}:owner=1000`, '--into', String(pid)]);
  t.equal(r.code, 0, `exits 0${r.code ? `: ${r.stderr}` : ''}`);
  t.match(r.stdout, /bound at .* in the namespace of process \d+/, 'says where');
  const read = await inside(pid, ['sh', '-c', `stat -c %u:%g ${vol}/code.txt; setpriv --reuid=1000 --regid=1000 --clear-groups sh -c 'echo made > ${vol}/new.txt'`]);
  t.equal(read.stdout, '1000:1000\n', `alice's file shows as 1000 inside${read.stderr ? `: ${read.stderr}` : ''}`);
  const made = statSync(join(src, 'new.txt'));
  t.equal(made.uid, world.users.alice!.uid, 'what uid 1000 wrote inside lands on disk as alice');
});

t.test('from inside the namespace, with no --into', async (t) => {
  const other = join(world.dirs.alice!, 'mnt2');
  mkdirSync(other);
  chownSync(other, world.users.alice!.uid, world.users.alice!.gid);
  const r = await cli(world.users.alice!, ['mount', 'img', other], ['nsenter', '--user', '--mount', '--preserve-credentials', `--target=${pid}`, '--']);
  t.equal(r.code, 0, `mount works in the namespace it runs in${r.code ? `: ${r.stderr}` : ''}`);
  t.equal((await inside(pid, ['cat', `${other}/hello`])).stdout, 'hello from the image\n', 'and reads there');
  const b = await cli(world.users.alice!, ['bind', join(world.dirs.alice!, 'src'), other], ['nsenter', '--user', '--mount', '--preserve-credentials', `--target=${pid}`, '--']);
  t.not(b.code, 0, 'bind of a directory opened inside is refused');
  t.match(b.stderr, /not in the broker's mount namespace.*--into podman/s, `and says what to do instead: ${b.stderr.trim()}`);
});

t.test('two mounts at once are both recorded: each waits for the records lock, ls lists both', async (t) => {
  const alice = world.users.alice!;
  const runtime = join(world.dirs.alice!, 'run');
  mkdirSync(join(runtime, 'mountgate'), { recursive: true, mode: 0o700 });
  for (const d of [runtime, join(runtime, 'mountgate')]) chownSync(d, alice.uid, alice.gid);
  const dirs = [0, 1].map((k) => join(world.dirs.alice!, `at-once-${k}`));
  for (const d of dirs) {
    mkdirSync(d);
    chownSync(d, alice.uid, alice.gid);
  }
  // The lock held from outside while both run: both must attach, then wait for it.
  const holder = spawn('flock', ['--exclusive', join(runtime, 'mountgate', 'attached.lock'), 'sleep', '60'], { uid: alice.uid, gid: alice.gid, stdio: 'ignore' });
  const withRuntime = (args: string[]) => runAs(alice, [process.execPath, cliPath, ...args], { busAddress: world.bus.address, timeoutMs: 120_000, env: { XDG_RUNTIME_DIR: runtime } });
  try {
    const mounts = dirs.map((d) => withRuntime(['mount', 'img', d, '--into', String(pid)]));
    let done = 0;
    for (const m of mounts) void m.then(() => done++);
    const attached = () => dirs.every((d) => readFileSync(`/proc/${pid}/mountinfo`, 'utf8').includes(` ${d} `));
    for (let k = 0; k < 200 && !attached(); k++) await new Promise((r) => setTimeout(r, 50));
    t.ok(attached(), 'both mounts are attached');
    await new Promise((r) => setTimeout(r, 500));
    t.equal(done, 0, 'and both commands wait for the lock before they record them');
    holder.kill('SIGKILL');
    const results = await Promise.all(mounts);
    t.same(results.map((r) => r.code), [0, 0], `both exit 0 once it is free${results.some((r) => r.code) ? `: ${results.map((r) => r.stderr).join('')}` : ''}`);
    const rows = JSON.parse((await withRuntime(['ls', '--into', String(pid), '--json'])).stdout) as { state: string; dir: string }[];
    t.same(rows.map((r) => `${r.state} ${r.dir}`).sort(), dirs.map((d) => `attached ${d}`), 'each has its record, and is attached');
  } finally {
    holder.kill('SIGKILL');
    for (const d of dirs) await inside(pid, ['umount', d]);
  }
});

t.test('mount IMAGE --fd N -- CMD: the program reads the image through the fd it was given, or attaches it itself', async (t) => {
  const alice = world.users.alice!;
  const proc = await cli(alice, ['mount', 'img', '--fd', '5', '--', 'sh', '-c', 'cat /proc/self/fd/5/hello; stat -c %u /proc/self/fd/5/hello; ls /proc/self/fd/5/..; exit 7']);
  t.equal(proc.code, 7, `the command's status is mount's${proc.stderr ? `: ${proc.stderr}` : ''}`);
  t.equal(proc.stdout, `hello from the image\n${alice.uid}\nhello\n`, "through /proc/self/fd/5: the image's file, its root-owned file as alice's, and .. stays at the image's root");
  const openat = await cli(alice, ['mount', 'img', '--fd', '9', '--', 'python3', '-c', "import os; f = os.open('hello', os.O_RDONLY, dir_fd=9); print(os.read(f, 100).decode(), end='')"]);
  t.equal(openat.stdout, 'hello from the image\n', `openat(9, "hello") reads it${openat.code ? `: ${openat.stderr}` : ''}`);
  // move_mount in a user+mount namespace the program made itself.
  const attach = 'my ($e, $d) = ("", "/mnt"); syscall(429, 3, $e, -100, $d, 4) == 0 or die "move_mount: $!\\n"; exec "cat", "/mnt/hello"';
  const moved = await cli(alice, ['mount', 'img', '--fd', '3', '--', 'unshare', '--user', '--map-root-user', '--mount', '--', 'perl', '-e', attach]);
  t.equal(moved.stdout, 'hello from the image\n', `move_mount of fd 3 in its own namespace attaches it${moved.code ? `: ${moved.stderr}` : ''}`);
  const others = await cli(alice, ['mount', 'img', '--fd', '4', '--', 'sh', '-c', 'ls /proc/self/fd/3 2>&1 >/dev/null | grep -c "No such"; ls /proc/self/fd/5 2>&1 >/dev/null | grep -c "No such"']);
  t.equal(others.stdout, '1\n1\n', 'the program gets no other fd of mountgate\'s');
  const bwrap = await cli(alice, ['mount', 'img', '--fd', '3', '--', 'bwrap', '--dev-bind', '/', '/', '--ro-bind-fd', '3', '/mnt', 'cat', '/mnt/hello']);
  t.not(bwrap.code, 0, 'bwrap 0.8 cannot bind it (as --help says)');
  t.match(bwrap.stderr, /Race condition binding dirfd/, bwrap.stderr.trim());
});

t.test('mount --fd refusals, as an unprivileged user', async (t) => {
  const alice = world.users.alice!;
  for (const [args, re] of [
    [['--fd', '2', '--', 'true'], /--fd 2: give a number from 3 to 255/],
    [['--fd', 'x', '--', 'true'], /--fd x: give a number/],
    [['--fd', '3'], /--fd 3: give the program to run after --/],
    [['--fd', '3', '--into', String(pid), '--', 'true'], /does not go with --into/],
    [['--fd', '3', '--for-podman', '--', 'true'], /does not go with --for-podman/],
  ] as const) {
    const r = await cli(alice, ['mount', 'img', ...args]);
    t.equal(r.code, 2, `${args.join(' ')}: a usage error`);
    t.match(r.stderr, re, r.stderr.trim());
  }
  const missing = await cli(alice, ['mount', 'img', '--fd', '3', '--', '/no/such/program']);
  t.equal(missing.code, 127, 'a program that does not exist: 127');
  const bobs = await cli(world.users.bob!, ['mount', 'img', '--fd', '3', '--', 'cat', '/proc/self/fd/3/hello']);
  t.equal(bobs.code, 7, "bob cannot have alice's image");
  t.equal(bobs.stdout, '', 'and reads nothing');
  const noCommand = await cli(alice, ['mount', 'img', mnt, 'extra', '--into', String(pid)]);
  t.equal(noCommand.code, 2, 'a command without --fd is a usage error');
});

t.test('refusals say what to do', async (t) => {
  const host = await cli(world.users.alice!, ['mount', 'img', mnt]);
  t.equal(host.code, 2, 'no --into on the host: a usage error');
  t.match(host.stderr, /host's namespaces.*--into podman or --into PID/, host.stderr.trim());
  const podman = await cli(world.users.alice!, ['mount', 'img', mnt, '--into', 'podman']);
  t.equal(podman.code, 2, '--into podman without a pause process');
  t.match(podman.stderr, /podman's pause process is not running.*podman unshare true/, podman.stderr.trim());
  const notHers = await cli(world.users.bob!, ['mount', 'img', mnt, '--into', String(pid)]);
  t.equal(notHers.code, 2, "--into another user's process");
  t.match(notHers.stderr, /is not yours/, notHers.stderr.trim());
  const userns = await cli(world.users.alice!, ['bind', join(world.dirs.alice!, 'src'), `${vol}:owner=1000`, '--into', String(pid), '--userns', 'keep-id:uid=1000,size=5']);
  t.equal(userns.code, 2, 'a --userns value podman 4.3 would not take');
  t.match(userns.stderr, /"size=5" is not uid=N or gid=N/, userns.stderr.trim());
  const missing = await cli(world.users.alice!, ['mount', 'img', join(mnt, 'no-such-dir'), '--into', String(pid)]);
  t.not(missing.code, 0, 'a target directory that does not exist there');
  t.match(missing.stderr, /is not a directory in the namespace of process/, missing.stderr.trim());
});

t.test('umount DIR --into PID', async (t) => {
  const r = await cli(world.users.alice!, ['umount', mnt, '--into', String(pid)]);
  t.equal(r.code, 0, `exits 0${r.code ? `: ${r.stderr}` : ''}`);
  const read = await inside(pid, ['ls', '-A', mnt]);
  t.equal(read.stdout, '', 'the mount is gone inside');
});
