// `mountgate toolbox`: a named container on a real image (Debian's
// busybox-static and a dpkg database, made once for this file), used as a
// person would through a terminal (node-pty as the driver): create, enter,
// install a local .deb as the container's root, leave, come back and find it,
// two shells at once, resize, Ctrl-C, job control, exit codes; what the user
// can and cannot reach inside; nothing left after the last shell and after rm.
// Runs as root: it makes the users and starts the broker.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, type World } from '../helpers/world.js';
import { runAs, type RunResult } from '../helpers/run-as.js';
import { cliPath } from '../helpers/paths.js';
import type { TestUser } from '../helpers/users.js';

const require = createRequire(import.meta.url);
const pty = require('node-pty') as typeof import('node-pty');

let world: World;
let alice: TestUser;
let home = '';
let runtime = '';
let bobHome = '';

t.before(async () => {
  world = await createWorld({
    users: { alice: {}, bob: {} },
    policy: {
      version: 1,
      methods: Object.fromEntries(['AddImage', 'PutObjects', 'MountImage', 'ListImages', 'BindIdmapped'].map((m) => [m, { users: ['*'] }])),
      limits: { concurrentRequests: 4, requestsPerMinute: 100000 },
    },
  });
  alice = world.users.alice!;
  const own = (path: string, user: TestUser, mode: number) => {
    chownSync(path, user.uid, user.gid);
    chmodSync(path, mode);
  };
  home = join(world.scratch, 'home-alice');
  runtime = join(world.scratch, 'run-alice');
  bobHome = join(world.scratch, 'home-bob');
  for (const [dir, user] of [[home, alice], [runtime, alice], [bobHome, world.users.bob!]] as const) {
    mkdirSync(dir);
    own(dir, user, 0o700);
  }
  writeFileSync(join(bobHome, 'secret'), 'bob only\n');
  execFileSync('usermod', ['--home', home, '--shell', '/bin/sh', alice.name]);

  // The image: busybox (static) with its applets, a root account and an empty dpkg database.
  const tree = join(world.dirs.alice!, 'rootfs');
  for (const d of ['bin', 'etc', 'root', 'tmp', 'usr/bin', 'var/lib/dpkg/info']) mkdirSync(join(tree, d), { recursive: true });
  copyFileSync('/usr/bin/busybox', join(tree, 'bin', 'busybox'));
  chmodSync(join(tree, 'bin', 'busybox'), 0o755);
  const applets = ['sh', 'ls', 'cat', 'id', 'ps', 'hostname', 'mknod', 'mkdir', 'dpkg', 'stat', 'echo', 'sleep', 'touch', 'rm', 'grep', 'tty', 'stty', 'kill', 'wc', 'head', 'true', 'false', 'test', 'readlink', 'find', 'pwd', 'sort', 'tr'];
  for (const a of applets) symlinkSync('busybox', join(tree, 'bin', a));
  writeFileSync(join(tree, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  writeFileSync(join(tree, 'etc', 'group'), 'root:x:0:\ntty:x:5:\n');
  writeFileSync(join(tree, 'var', 'lib', 'dpkg', 'status'), '');
  execFileSync('chown', ['-R', `${alice.uid}:${alice.gid}`, tree]);
  const add = await cli(['image', 'add', tree, '--name', 'bb']);
  if (add.code !== 0) throw new Error(`image add: ${add.stderr}`);

  // A local package, as a user would make one.
  const src = join(world.scratch, 'debsrc');
  mkdirSync(join(src, 'DEBIAN'), { recursive: true });
  mkdirSync(join(src, 'usr', 'bin'), { recursive: true });
  writeFileSync(join(src, 'usr', 'bin', 'hello-mg'), '#!/bin/sh\necho hello from the package\n', { mode: 0o755 });
  writeFileSync(join(src, 'DEBIAN', 'control'), 'Package: hello-mg\nVersion: 1.0\nArchitecture: all\nMaintainer: mountgate tests <tests@mountgate.invalid>\nDescription: a package for the toolbox test\n');
  execFileSync('dpkg-deb', ['-Zgzip', '--root-owner-group', '--build', src, join(home, 'hello.deb')], { stdio: 'ignore' });
  chownSync(join(home, 'hello.deb'), alice.uid, alice.gid);
  writeFileSync(join(home, 'notes.txt'), 'mine\n');
  chownSync(join(home, 'notes.txt'), alice.uid, alice.gid);
});
t.teardown(() => world?.teardown());

const userEnv = () => ({ HOME: home, XDG_RUNTIME_DIR: runtime, TERM: 'xterm', SHELL: '/bin/sh' });

function cli(args: string[], opts: { input?: string } = {}): Promise<RunResult> {
  return runAs(alice, [process.execPath, cliPath, ...args], { busAddress: world.bus.address, cwd: home || '/', env: home ? userEnv() : {}, timeoutMs: 120_000, ...opts });
}

/** A terminal as the user sees it: what they type, what the screen shows. */
interface Term {
  screen(): string;
  type(text: string): void;
  waitFor(re: RegExp, what: string): Promise<void>;
  resize(cols: number, rows: number): void;
  exited: Promise<number>;
}

function terminal(tt: Tap.Test, args: string[]): Term {
  const term = pty.spawn('env', ['-u', 'NODE_OPTIONS', process.execPath, cliPath, ...args], {
    name: 'xterm',
    cols: 100,
    rows: 30,
    cwd: home,
    uid: alice.uid,
    gid: alice.gid,
    env: { PATH: '/usr/bin:/bin:/usr/sbin:/sbin', MOUNTGATE_BUS_ADDRESS: world.bus.address, ...userEnv() },
  });
  let screen = '';
  term.onData((d) => (screen += d));
  return {
    screen: () => screen,
    type: (text) => term.write(text),
    async waitFor(re, what) {
      for (let k = 0; k < 300 && !re.test(screen); k++) await new Promise((r) => setTimeout(r, 50));
      tt.match(screen, re, what);
    },
    resize: (cols, rows) => term.resize(cols, rows),
    exited: new Promise((res) => term.onExit(({ exitCode, signal }) => res(signal ? 128 + signal : exitCode))),
  };
}

const runDir = () => join(runtime, 'mountgate', 'toolbox', 'dev');

/** Host processes whose user namespace is not the host's and whose uid is alice's or one of her subordinate ids. */
function namespacedProcessesOfAlice(): number[] {
  const hostUserns = readlinkSafe('/proc/self/ns/user');
  return readdirSync('/proc').filter((n) => /^\d+$/.test(n)).map(Number).filter((pid) => {
    try {
      const uid = Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
      const mine = uid === alice.uid || (uid >= alice.subuid.start && uid < alice.subuid.start + alice.subuid.count);
      return mine && readlinkSafe(`/proc/${pid}/ns/user`) !== hostUserns;
    } catch {
      return false;
    }
  });
}

function readlinkSafe(path: string): string | undefined {
  try {
    return execFileSync('readlink', [path], { encoding: 'utf8' }).trim();
  } catch {
    return undefined;
  }
}

async function eventually(check: () => boolean, ms = 5000): Promise<boolean> {
  for (let k = 0; k < ms / 50 && !check(); k++) await new Promise((r) => setTimeout(r, 50));
  return check();
}

t.test('create makes a stopped toolbox; list shows it', async (tt) => {
  const r = await cli(['toolbox', 'create', 'dev', '--image', 'bb']);
  tt.equal(r.code, 0, `create exits 0${r.code ? `: ${r.stderr}` : ''}`);
  const list = await cli(['toolbox', 'list', '--json']);
  tt.match(JSON.parse(list.stdout), [{ name: 'dev', imageRef: 'bb' }], 'listed');
  tt.notOk(JSON.parse(list.stdout)[0].holder, 'not running');
  tt.ok(statSync(join(home, '.local/share/mountgate/toolbox/dev')).isDirectory(), 'its layer lives in the home');
  const again = await cli(['toolbox', 'create', 'dev', '--image', 'bb']);
  tt.not(again.code, 0, 'a second create of the same name is refused');
  tt.match(again.stderr, /exists already/);
  const bad = await cli(['toolbox', 'create', 'no/slash', '--image', 'bb']);
  tt.equal(bad.code, 3, 'a name that is no hostname is refused');
});

t.test('a day in the toolbox, through a terminal', async (tt) => {
  const a = terminal(tt, ['toolbox', 'enter', 'dev']);
  a.type(`echo "who=$(id -u):$(id -g):$(id -un) host=$(hostname) cwd=$(pwd) shell=$SHELL"\r`);
  await a.waitFor(new RegExp(`who=${alice.uid}:${alice.gid}:${alice.name} host=dev cwd=${home} shell=/bin/sh`), 'the user is themselves, in their home, on host "dev"');
  a.type('grep ^mgalice /etc/passwd | tr : " "\r');
  await a.waitFor(new RegExp(`${alice.name} x ${alice.uid} ${alice.gid} ${alice.name} ${home} /bin/sh`), 'their passwd entry is in the container');
  a.type('echo "tty=$(tty) link=$(readlink /proc/self/fd/0)"\r');
  await a.waitFor(/tty=\/dev\/pts\/\d+ link=\/dev\/pts\/\d+/, "the terminal has a name inside: the container's own devpts");
  const ttyLine = /tty=(\/dev\/pts\/\d+) link=(\/dev\/pts\/\d+)/.exec(a.screen())!;
  tt.equal(ttyLine[1], ttyLine[2], 'the one fd 0 is');
  a.type('hello-mg || echo "not-yet=$?"\r');
  await a.waitFor(/not-yet=127/, 'the package is not installed yet');

  const install = await cli(['toolbox', 'enter', 'dev', '--root', '--', 'dpkg', '-i', join(home, 'hello.deb')]);
  tt.equal(install.code, 0, `dpkg -i as the container's root exits 0${install.code ? `: ${install.stderr}` : ''}`);
  tt.match(install.stdout, /Setting up hello-mg/);
  a.type('hello-mg\r');
  await a.waitFor(/^hello from the package/m, 'the first shell runs what the second installed');

  // A second shell joins the same container.
  a.type('echo "a-pid=$$"\r');
  await a.waitFor(/a-pid=(\d+)/, 'the first shell says its pid');
  const aPid = /a-pid=(\d+)/.exec(a.screen())![1]!;
  const b = terminal(tt, ['toolbox', 'enter', 'dev']);
  b.type(`echo "b-sees=$(cat /proc/${aPid}/comm) one=$(cat /proc/1/comm) count=$(ls /proc | grep -c '^[0-9]')"\r`);
  await b.waitFor(/b-sees=sh one=perl count=\d+/, 'the second shell sees the first and the holder as PID 1');
  const count = Number(/count=(\d+)/.exec(b.screen())![1]);
  tt.ok(count <= 8, `only the container's processes are in /proc (${count})`);
  const list = await cli(['toolbox', 'list']);
  tt.match(list.stdout, /dev\tbb\trunning \(holder \d+\)/, 'list says it runs');

  b.resize(120, 40);
  b.type('echo "size=$(stty size)"\r');
  await b.waitFor(/size=40 120/, 'a resize reaches the shell');
  b.type('sleep 100\r');
  await new Promise((r) => setTimeout(r, 500));
  b.type('\x03');
  b.type('echo "after-ctrl-c=$?"\r');
  await b.waitFor(/after-ctrl-c=130/, 'Ctrl-C stops the foreground command (130), the shell stays');
  b.type('sleep 200 &\r');
  b.type('jobs\r');
  await b.waitFor(/\[1\]\+? +Running +sleep 200/, 'job control: a background job is listed');
  b.type('kill %1; wait; [ -t 0 ] && echo "on-a-terminal"\r');
  await b.waitFor(/^on-a-terminal/m, 'the shell runs on a terminal');
  b.type('exit 3\r');
  tt.equal(await b.exited, 3, "the second shell's exit status is enter's");
  a.type('echo "still-here"\r');
  await a.waitFor(/^still-here/m, 'the first shell is unaffected');
  a.type('exit\r');
  tt.equal(await a.exited, 0, 'exit 0');

  tt.ok(await eventually(() => namespacedProcessesOfAlice().length === 0), 'after the last shell the container stopped: no process left in it');
  tt.ok(await eventually(() => !existsSync(runDir())), 'and its state directory is gone');

  const back = await cli(['toolbox', 'enter', 'dev', '--', 'hello-mg']);
  tt.equal(back.stdout, 'hello from the package\n', 'entered again, the package is still installed');
});

t.test('inside: only what the user may reach, a minimal /dev, read-only /sys, no devices', async (tt) => {
  const user = await cli(['toolbox', 'enter', 'dev', '--', 'sh', '-c', [
    'cat /etc/shadow >/dev/null 2>&1 && echo shadow-readable',
    `ls ${bobHome} >/dev/null 2>&1 && echo bob-visible`,
    'ls /root 2>/dev/null | grep . && echo root-listed',
    'echo "dev=$(ls /dev | tr "\\n" " ")"',
    'echo "chardevs=$(find /dev -type c | sort | tr "\\n" " ")"',
    'touch /sys/x 2>/dev/null && echo sys-writable',
    'grep " /sys " /proc/mounts | grep -q "ro[, ]" && echo sys-ro',
    'mknod /tmp/n c 1 3 2>/dev/null && echo user-mknod',
    'touch /usr/bin/intruder 2>/dev/null && echo image-writable-by-user',
    `echo "home=$(stat -c %u ${home}/notes.txt)"`,
    `echo made > ${home}/made-inside`,
    'echo "hostname=$(cat /proc/sys/kernel/hostname)"',
    'echo "resolv=$(cat /etc/resolv.conf | tr "\\n" "|")"',
    'echo "hosts-names=$(grep -c "[[:space:]]dev$" /etc/hosts) localhost=$(grep -c "^127.0.0.1[[:space:]]*localhost" /etc/hosts)"',
    '(echo x >> /etc/resolv.conf) 2>/dev/null && echo resolv-writable',
    'true',
  ].join('; ')]);
  tt.equal(user.code, 0, `exits 0${user.code ? `: ${user.stderr}` : ''}`);
  tt.notMatch(user.stdout, /shadow-readable|bob-visible|root-listed|sys-writable|user-mknod|image-writable-by-user/, 'nothing the user may not reach');
  tt.match(user.stdout, /^dev=fd full null ptmx pts random shm stderr stdin stdout tty urandom zero $/m, '/dev has only the listed entries');
  tt.match(user.stdout, /^chardevs=\/dev\/full \/dev\/null \/dev\/pts\/ptmx \/dev\/random \/dev\/tty \/dev\/urandom \/dev\/zero $/m, 'and only those devices');
  tt.match(user.stdout, /^sys-ro$/m, '/sys is mounted read-only');
  tt.match(user.stdout, new RegExp(`^home=${alice.uid}$`, 'm'), 'the home shows the user\'s files as theirs');
  tt.match(user.stdout, /^hostname=dev$/m);
  tt.equal(/^resolv=(.*)$/m.exec(user.stdout)?.[1], readFileSync('/etc/resolv.conf', 'utf8').replace(/\n/g, '|'), "/etc/resolv.conf is the host's");
  tt.match(user.stdout, /^hosts-names=1 localhost=1$/m, "/etc/hosts names the container and localhost");
  tt.notMatch(user.stdout, /resolv-writable/, 'and resolv.conf cannot be written from inside');
  tt.equal(statSync(join(home, 'made-inside')).uid, alice.uid, 'a file made in the home lands on the host as the user');

  const root = await cli(['toolbox', 'enter', 'dev', '--root', '--', 'sh', '-c', [
    'cat /proc/1/root/etc/shadow >/dev/null 2>&1 && echo shadow-via-proc',
    'cat /etc/shadow >/dev/null 2>&1 && echo shadow',
    `ls ${bobHome} >/dev/null 2>&1 && echo bob-visible`,
    'for at in /tmp/dev-null /dev/shm/dev-null /dev-null; do if mknod $at c 1 3 2>/dev/null; then if echo x > $at 2>/dev/null || head -c1 $at >/dev/null 2>&1; then echo "usable-device $at"; else echo "unusable $at"; fi; else echo "no-mknod $at"; fi; done',
    'echo 1 > /sys/kernel/profiling 2>/dev/null && echo sys-written',
    'echo new > /usr/bin/added && echo "root-writes-layer"',
    'echo "uid=$(id -u)"',
  ].join('; ')]);
  tt.equal(root.code, 0, `exits 0${root.code ? `: ${root.stderr}` : ''}`);
  tt.notMatch(root.stdout, /shadow|bob-visible|usable-device|sys-written/, "the container's root reaches nothing more, and makes no usable device");
  for (const at of ['/tmp/dev-null', '/dev/shm/dev-null', '/dev-null']) tt.match(root.stdout, new RegExp(`^(no-mknod|unusable) ${at}$`, 'm'), `mknod at ${at} fails or makes a node that cannot be opened`);
  tt.comment(root.stdout.split('\n').filter((l) => /mknod|unusable/.test(l)).join('; '));
  tt.match(root.stdout, /^uid=0$/m, '--root is uid 0 inside');
  tt.match(root.stdout, /^root-writes-layer$/m, "root writes the container's layer");
  const image = await cli(['run', '--image', 'bb', '--', '/bin/ls', '/usr/bin']);
  tt.equal(image.code, 0, `run exits 0${image.code ? `: ${image.stderr}` : ''}`);
  tt.notMatch(image.stdout, /added|hello-mg|intruder/, 'the image itself is unchanged');
  const etc = await cli(['run', '--image', 'bb', '--', '/bin/ls', '/etc']);
  tt.equal(etc.stdout, 'group\npasswd\n', 'and its /etc has no resolv.conf or hosts');
  tt.ok(await eventually(() => namespacedProcessesOfAlice().length === 0), 'stopped again');
});

t.test('rm refuses a running toolbox, --force stops it, and nothing is left', async (tt) => {
  const a = terminal(tt, ['toolbox', 'enter', 'dev']);
  a.type('echo "in=$(hostname)"\r');
  await a.waitFor(/in=dev/, 'a shell is in the toolbox');
  const refused = await cli(['toolbox', 'rm', 'dev']);
  tt.equal(refused.code, 3, 'rm of a running toolbox is refused');
  tt.match(refused.stderr, /is running/);
  const forced = await cli(['toolbox', 'rm', 'dev', '--force']);
  tt.equal(forced.code, 0, `rm --force exits 0${forced.code ? `: ${forced.stderr}` : ''}`);
  tt.equal(await a.exited, 137, 'the shell was killed with its container');
  tt.notOk(existsSync(join(home, '.local/share/mountgate/toolbox/dev')), 'its layer is gone');
  tt.same(readdirSync(runtime), [], 'nothing under $XDG_RUNTIME_DIR');
  tt.same(namespacedProcessesOfAlice(), [], 'no process left');
  tt.notMatch(readFileSync('/proc/self/mountinfo', 'utf8'), /mountgate\/toolbox|home-alice/, 'no mount left');
  const list = await cli(['toolbox', 'list', '--json']);
  tt.same(JSON.parse(list.stdout), [], 'list is empty');
  const gone = await cli(['toolbox', 'enter', 'dev', '--', 'true']);
  tt.equal(gone.code, 7, 'entering a removed toolbox says it is not found');
});

t.test('Ctrl-C of a non-interactive run removes its writable layer', async (tt) => {
  const term = terminal(tt, ['run', '--image', 'bb', '--writable', '--', '/bin/sh', '-c', 'echo started; exec sleep 100']);
  await term.waitFor(/started/, 'the command runs');
  tt.ok(readdirSync(runtime).some((n) => n.startsWith('mountgate-run-')), 'its scratch directory exists while it runs');
  term.type('\x03');
  tt.equal(await term.exited, 130, 'Ctrl-C: 130');
  tt.same(readdirSync(runtime).filter((n) => n.startsWith('mountgate-run-')), [], 'the scratch directory is gone');
});
