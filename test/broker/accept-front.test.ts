// The broker as two services, the way the systemd units run it
// (mountgated.socket + mountgated.service for the executor, and
// mountgate-front.service): `mountgated --accept-front` starts no front and
// waits on its socket; the front, started separately as the user mountgate in
// a mount namespace of its own (what the front's unit sandbox gives it),
// connects with --connect. Checked: the pair serves a user's bind; mount facts
// come from the executor's (the host's) mount table, not the front's copy;
// only the front's user may connect, and only one front at a time; a front
// that goes away is replaced by the next one that connects. Runs as root.
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { collectAuditLines } from '../helpers/audit-lines.js';
import { startPrivateBus } from '../helpers/bus-config.js';
import { ensureFrontUser, frontUserName } from '../helpers/front-user.js';
import { brokerPath, pkgRoot } from '../helpers/paths.js';
import { runAs } from '../helpers/run-as.js';
import { createUser, removeUser } from '../helpers/users.js';

/** A process whose stdout is JSON audit lines, collected (test/helpers/audit-lines.ts), and a way to stop it. */
function watched(child: ChildProcess) {
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  const audit = collectAuditLines(child, 'a broker half');
  return {
    child,
    exited,
    lines: audit.lines,
    waitFor: (pred: (l: Record<string, unknown>) => boolean, timeoutMs = 20_000) => audit.waitFor(pred, timeoutMs),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

const frontUid = ensureFrontUser();
const frontGid = Number(spawnSync('id', ['-g', frontUserName], { encoding: 'utf8' }).stdout.trim());
const dir = mkdtempSync('/tmp/mountgate-accept.');
chmodSync(dir, 0o711);
const stateDir = join(dir, 'state');
mkdirSync(stateDir, { mode: 0o700 });
chownSync(stateDir, frontUid, frontGid);
const socket = join(dir, 'executor.sock');
const policyPath = join(dir, 'policy.json');
writeFileSync(policyPath, JSON.stringify({ version: 1, methods: { BindIdmapped: { users: ['*'] }, Explain: { users: ['*'] } } }));
const frontJs = join(pkgRoot, 'dist', 'src', 'broker', 'front.js');

const bus = await startPrivateBus();
const alice = createUser('mgacc');
const home = join(dir, 'alice');
mkdirSync(home, { mode: 0o755 });
chownSync(home, alice.uid, alice.gid);
writeFileSync(join(home, 'hello.txt'), 'hello through two services\n', { mode: 0o644 });
chownSync(join(home, 'hello.txt'), alice.uid, alice.gid);

const executor = watched(spawn('env', ['-u', 'NODE_OPTIONS', process.execPath, brokerPath, '--accept-front', '--front-socket', socket,
  '--bus-address', bus.address, '--policy', policyPath, '--state-dir', stateDir, '--runtime-dir', join(dir, 'run')], { stdio: ['ignore', 'pipe', 'pipe'] }));
const fronts: ReturnType<typeof watched>[] = [];
/** A front as its unit runs it: user mountgate, no groups, a private mount namespace of its own. */
const startFront = () => {
  const f = watched(spawn('unshare', ['--mount', '--propagation', 'private', '--', 'setpriv', `--reuid=${frontUserName}`, `--regid=${frontUserName}`, '--clear-groups', '--',
    'env', '-i', 'PATH=/usr/bin:/bin', process.execPath, frontJs, '--connect', socket], { stdio: ['ignore', 'pipe', 'pipe'] }));
  fronts.push(f);
  return f;
};
t.teardown(async () => {
  for (const f of fronts) await f.stop();
  await executor.stop();
  await bus.stop();
  removeUser(alice);
  rmSync(dir, { recursive: true, force: true });
});

/** A bind of `source` as alice, reading hello.txt through it. */
const bindAsAlice = (source: string) => runAs(alice, [process.execPath, join(pkgRoot, 'bin', 'mountgate'), 'run', '--bind', `${source}:/mnt:owner=1000`, '--', 'cat', '/mnt/hello.txt'],
  { busAddress: bus.address, cwd: '/' });

/** Connects to the executor's socket as `uid`; resolves to what the peer did: "closed" when the executor hung up at once. */
const connectAs = (uid: number): Promise<string> => new Promise((resolve) => {
  const script = `const s = require('node:net').connect(${JSON.stringify(socket)});
    s.on('connect', () => { s.on('close', () => { console.log('closed'); process.exit(0); }); s.on('data', () => {}); setTimeout(() => { console.log('kept open'); process.exit(0); }, 2000); });
    s.on('error', (e) => { console.log(e.code); process.exit(0); });`;
  const child = spawn('env', ['-u', 'NODE_OPTIONS', process.execPath, '-e', script], { uid, gid: uid, cwd: '/', stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.once('close', () => resolve(out.trim()));
});

t.test('the executor waits on its socket, for the front\'s group only', async (t) => {
  await executor.waitFor((l) => l.event === 'start' && /waiting for the front/.test(String(l.message)));
  const st = statSync(socket);
  t.ok(st.isSocket(), 'the socket exists');
  t.equal(st.mode & 0o777, 0o660, 'mode 0660');
  t.equal(st.uid, 0, 'owned by root');
  t.equal(st.gid, frontGid, "group: the front's user's group");
});

t.test('a front in its own mount namespace connects and serves', async (t) => {
  const front = startFront();
  const ready = await front.waitFor((l) => l.event === 'ready');
  t.equal(ready.uid, frontUid, 'the front runs as mountgate');
  const r = await bindAsAlice(home);
  t.equal(r.code, 0, `alice's bind works through the pair${r.code ? `: ${r.stderr}` : ''}`);
  t.equal(r.stdout, 'hello through two services\n', 'her file reads through the mount');
});

t.test("mount facts come from the executor's mount table, not the front's", async (t) => {
  // Mounted after the front started, in the host namespace: the front's
  // private copy of the mount table never sees it, the executor's does.
  const covered = join(home, 'covered');
  mkdirSync(covered);
  chownSync(covered, alice.uid, alice.gid);
  t.equal(spawnSync('mount', ['-t', 'tmpfs', 'tmpfs', covered]).status, 0, 'a tmpfs mounted below alice\'s directory');
  t.teardown(() => { spawnSync('umount', [covered]); });
  const r = await bindAsAlice(home);
  t.not(r.code, 0, 'the bind is refused');
  t.match(r.stderr, /mount/i, `with a reason about the mount below it: ${r.stderr.trim()}`);
  t.match(r.stderr, /covered/, 'naming it');
});

t.test('only the front\'s user may connect, and only one front at a time', async (t) => {
  t.equal(await connectAs(alice.uid), 'EACCES', 'another user cannot even open the socket (0660 root:mountgate)');
  // Past the file mode (group mountgate, or the socket made wider), SO_PEERCRED still decides.
  chmodSync(socket, 0o666);
  t.teardown(() => chmodSync(socket, 0o660));
  t.equal(await connectAs(alice.uid), 'closed', 'a connection from another uid is closed at once');
  await executor.waitFor((l) => /refused a connection from uid \d+/.test(String(l.message)));
  t.equal(await connectAs(frontUid), 'closed', 'a second connection of the front\'s user, while a front is connected, is closed');
  await executor.waitFor((l) => /refused a second front/.test(String(l.message)));
  const r = await bindAsAlice(home);
  t.equal(r.code, 0, `the connected front still serves${r.code ? `: ${r.stderr}` : ''}`);
});

t.test('a front that goes away is replaced by the next one', async (t) => {
  const first = fronts[0]!;
  first.child.kill('SIGKILL');
  await first.exited;
  await executor.waitFor((l) => /disconnected; waiting for the next one/.test(String(l.message)));
  const second = startFront();
  await second.waitFor((l) => l.event === 'ready');
  const r = await bindAsAlice(home);
  t.equal(r.code, 0, `the new front serves${r.code ? `: ${r.stderr}` : ''}`);
  t.equal(r.stdout, 'hello through two services\n');
});

t.test('the front exits when the executor goes away', async (t) => {
  const front = fronts.at(-1)!;
  await executor.stop();
  await front.exited;
  t.not(front.child.exitCode, 0, 'the front ends with a failure status (its unit restarts it, which restarts the executor)');
  t.notOk(statSync(socket, { throwIfNoEntry: false }), 'the executor removed its socket');
});
