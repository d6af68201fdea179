// README's bubblewrap recipe with the real bwrap (0.8), and what a user can
// reach inside `mountgate run`: as a real user, against a real broker, with
// the answers read through the kernel. Inside run (the host's tree, or an
// image as /) and inside the bwrap sandbox on an image, the user cannot read
// what they could not read outside (/root, /etc/shadow, another user's
// home), cannot make a device node, and cannot write to the image. Runs as
// root: it makes the users and starts the broker.
import t from 'tap';
import { chmodSync, chownSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, type World } from '../helpers/world.js';
import { runAs, type RunResult } from '../helpers/run-as.js';
import { cliPath } from '../helpers/paths.js';
import { makeBusyboxRoot } from '../helpers/busybox-root.js';

let world: World;
let home = '';
t.before(async () => {
  world = await createWorld({
    users: { alice: {}, bob: {} },
    policy: {
      version: 1,
      methods: Object.fromEntries(['AddImage', 'PutObjects', 'MountImage', 'ListImages', 'BindIdmapped'].map((m) => [m, { users: ['*'] }])),
      limits: { concurrentRequests: 4, requestsPerMinute: 100000 },
    },
  });
  const alice = world.users.alice!;
  home = world.dirs.alice!;
  makeBusyboxRoot(join(home, 'rootfs'), alice);
  for (const d of ['src', 'sbx']) {
    mkdirSync(join(home, d));
    chownSync(join(home, d), alice.uid, alice.gid);
  }
  writeFileSync(join(home, 'src', 'code.txt'), 'source\n');
  chownSync(join(home, 'src', 'code.txt'), alice.uid, alice.gid);
  // bob's home, closed to others, with a secret in it.
  writeFileSync(join(world.dirs.bob!, 'secret'), 'bob only\n', { mode: 0o600 });
  chownSync(join(world.dirs.bob!, 'secret'), world.users.bob!.uid, world.users.bob!.gid);
  chmodSync(world.dirs.bob!, 0o700);
  const add = await mountgate(['image', 'add', join(home, 'rootfs'), '--name', 'bb']);
  if (add.code !== 0) throw new Error(`image add: ${add.stderr}`);
});
t.teardown(() => world?.teardown());

const as = (argv: string[]): Promise<RunResult> =>
  runAs(world.users.alice!, argv, { busAddress: world.bus.address, cwd: home, timeoutMs: 120_000, env: { HOME: home } });
const mountgate = (args: string[]) => as([process.execPath, cliPath, ...args]);

/** Each probe prints one line: "ok" when the action succeeded, else the shell's error. */
const probes = (actions: string[]) => actions.map((a) => `if out=$(${a} 2>&1); then echo ok; else echo "$out" | head -c 200 | tr '\\n' ' '; echo; fi`).join('; ');

t.test('outside: the probes are refused to alice as herself (the baseline)', async (t) => {
  const r = await as(['sh', '-c', probes(['cat /etc/shadow', 'ls /root', `cat ${world.dirs.bob}/secret`])]);
  const lines = r.stdout.trim().split('\n');
  t.equal(lines.length, 3, r.stdout);
  for (const l of lines) t.match(l, /Permission denied/, l);
});

t.test('inside run on the host\'s tree: root there, and still no more than alice', async (t) => {
  const r = await mountgate(['run', '--bind', `${home}/src:${home}/src`, '--', 'sh', '-c', `id -u; ${probes(['cat /etc/shadow', 'ls /root', `cat ${world.dirs.bob}/secret`, `mknod ${home}/src/null c 1 3`, 'mknod /tmp/mg-null c 1 3', 'touch /etc/mountgate-was-here'])}`]);
  t.equal(r.code, 0, `run exits 0${r.code ? `: ${r.stderr}` : ''}`);
  const [uid, shadow, root, bob, mknodBind, mknodTmp, etc] = r.stdout.trim().split('\n');
  t.equal(uid, '0', 'uid 0 in the namespace');
  t.match(shadow, /Permission denied/, `/etc/shadow: ${shadow}`);
  t.match(root, /Permission denied/, `/root: ${root}`);
  t.match(bob, /Permission denied/, `another user's home: ${bob}`);
  t.match(mknodBind, /Operation not permitted/, `no device node in the bind: ${mknodBind}`);
  t.match(mknodTmp, /Operation not permitted/, `nor in the host's /tmp: ${mknodTmp}`);
  t.match(etc, /Permission denied/, `the host's /etc is not writable: ${etc}`);
  t.notOk(readdirSync(join(home, 'src')).includes('null'), 'nothing was made');
});

t.test('inside run on an image: the image cannot be written, not even with --writable', async (t) => {
  const r = await mountgate(['run', '--image', 'bb', '--', '/bin/sh', '-c', probes(['touch /data/new', 'mknod /tmp/null c 1 3', 'ls /root', 'cat /etc/shadow'])]);
  t.equal(r.code, 0, `run exits 0${r.code ? `: ${r.stderr}` : ''}`);
  const [write, mknod, root, shadow] = r.stdout.trim().split('\n');
  t.match(write, /Read-only file system/, `the image: ${write}`);
  t.match(mknod, /Operation not permitted/, `a device node: ${mknod}`);
  t.match(root, /No such file/, 'the host\'s /root is not there');
  t.match(shadow, /No such file/, 'nor its /etc/shadow');
  const w = await mountgate(['run', '--image', 'bb', '--writable', '--', '/bin/sh', '-c', 'echo changed > /data/hello && cat /data/hello']);
  t.equal(w.stdout, 'changed\n', `--writable writes to its overlay${w.code ? `: ${w.stderr}` : ''}`);
  const again = await mountgate(['run', '--image', 'bb', '--', '/bin/cat', '/data/hello']);
  t.equal(again.stdout, 'hello from the image\n', 'and the image is unchanged');
});

t.test('bwrap recipe: a sandbox whose / is the image and whose home is an idmapped bind', async (t) => {
  const inside = probes(['touch /x', 'mknod /home/me/null c 1 3', 'ls /root', 'cat /etc/shadow', `cat ${world.dirs.bob}/secret`]);
  const r = await mountgate(['run', '--image', `bb:${home}/sbx`, '--bind', `${home}/src:${home}/src`, '--',
    'bwrap', '--unshare-all', '--die-with-parent', '--ro-bind', `${home}/sbx`, '/', '--bind', `${home}/src`, '/home/me',
    '--proc', '/proc', '--dev', '/dev', '--uid', '1000', '--gid', '1000', '--chdir', '/home/me',
    '/bin/sh', '-c', `id -u; stat -c %u:%g code.txt /data/staff; cat /data/hello; echo made > new.txt; ${inside}`]);
  t.equal(r.code, 0, `the sandbox runs${r.code ? `: ${r.stderr}` : ''}`);
  const [uid, code, staff, hello, slash, mknod, root, shadow, bob] = r.stdout.trim().split('\n');
  t.equal(uid, '1000', 'the app runs as uid 1000');
  t.equal(code, '1000:1000', 'its home is its own');
  t.equal(staff, '1000:65534', 'the image\'s root is the app, ids the sandbox does not map show as nobody');
  t.equal(hello, 'hello from the image', 'the image is its root');
  t.match(slash, /Read-only file system/, `the image cannot be written: ${slash}`);
  t.match(mknod, /Operation not permitted/, `no device node: ${mknod}`);
  t.match(root, /No such file/, 'no host /root');
  t.match(shadow, /No such file/, 'no host /etc/shadow');
  t.match(bob, /No such file/, "no other user's home");
  const made = statSync(join(home, 'src', 'new.txt'));
  t.same([made.uid, made.gid], [world.users.alice!.uid, world.users.alice!.gid], 'what the app wrote in its home is alice\'s on the host');
});

t.test('mountgate run inside bwrap: the error names no_new_privs and what to do', async (t) => {
  const r = await as(['bwrap', '--dev-bind', '/', '/', '--', process.execPath, cliPath, 'run', '--', 'true']);
  t.not(r.code, 0, 'run cannot map ids there');
  t.match(r.stderr, /no_new_privs \(NoNewPrivs: 1 in \/proc\/self\/status/, r.stderr.trim());
  t.match(r.stderr, /run mountgate outside the sandbox and hand the mount in/, 'says what to do');
  t.notMatch(r.stderr, /is the uidmap package installed/, 'and not the misleading hint');
});
