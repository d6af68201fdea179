// Regression tests for patches/dbus-next+0.10.2.patch (and the one-line
// patches/usocket+1.1.0.patch), against a real private dbus-daemon, a test
// service on dbus-next's low-level API (helpers/service.mjs, the way the
// broker is built) and clients. The defects of dbus-next 0.10.2 they pin:
//
// 1. fd attribution: the parser gave EVERY queued fd to the message it was
//    parsing, so in a burst of pipelined fd-carrying calls a later message
//    found none and threw "No FDs available" inside the socket handler: the
//    process died. Now each message takes exactly the fds its UNIX_FDS header
//    declares; a message that cannot be decoded (fd index out of range) is
//    answered with InvalidArgs and its fds closed; fewer fds than declared is
//    a protocol error for the connection (an 'error' event, never a throw).
// 2. fd leaks: fds of messages no handler kept were never closed. Now every
//    fd of a received message is closed after dispatch unless a handler took
//    it with msg.takeFd(fd) (method returns: the fds belong to the caller of
//    bus.call()). bus.send() returns a promise that resolves once the message
//    and its fds were written, so a reply's fd can then be closed (usocket
//    patch: fds of a write that hit EAGAIN before its first byte were dropped).
// 3. EXTERNAL auth sent process.getuid() as authorization identity, which is
//    not the uid the bus sees for a client inside a user namespace: rejected.
//    Now no identity is sent; the daemon uses the socket credentials.
// 4. With negotiateUnixFd: true, a usocket that fails to load silently fell
//    back to a socket without fd passing. Now it is an error.
import t from 'tap';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import fs from 'node:fs';
import path from 'node:path';
import { startBus, type PrivateBus } from './helpers/bus.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../..');
const pkg = process.env.MOUNTGATE_TEST_PKG ?? repoRoot;
const require = createRequire(import.meta.url);
const dbus = require('dbus-next');
const { Message } = dbus;
const { marshall } = require('dbus-next/lib/message.js');

const DEST = 'org.mountgate.Test';
const OBJ = '/org/mountgate/Test';

let bus: PrivateBus;
let service: ChildProcess | undefined;
let serviceName = '';
let serviceLog = '';
const clients: any[] = [];

function connect (): Promise<any> {
  const c = dbus.sessionBus({ busAddress: bus.address, negotiateUnixFd: true });
  clients.push(c);
  c.on('error', () => {});
  return new Promise((resolve, reject) => {
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}

function call (c: any, member: string, signature = '', body: unknown[] = [], path = OBJ, iface = DEST): Promise<any> {
  return c.call(new Message({ destination: DEST, path, interface: iface, member, signature, body }));
}

async function fdCount (c: any): Promise<number> {
  return (await call(c, 'FdCount')).body[0];
}

function serviceAlive (): boolean {
  return service !== undefined && service.exitCode === null && service.signalCode === null;
}

// Writes a hand-made message on c's socket: `patch` may edit its bytes and
// `fds` replace the fds sent with it. Resolves with the reply, or 'no reply'.
function rawSend (c: any, fields: Record<string, unknown>, fds?: number[], patch?: (b: Buffer) => void): Promise<any> {
  const m = new Message(fields);
  m.serial = c.newSerial();
  const [data, ownFds] = marshall(m);
  if (patch) patch(data);
  const reply = new Promise((resolve) => {
    c._methodReturnHandlers[m.serial] = resolve;
    setTimeout(() => resolve('no reply'), 1500).unref();
  });
  c._connection.stream.write({ data, fds: fds ?? ownFds });
  return reply;
}

function tmpFiles (n: number): number[] {
  const fds: number[] = [];
  for (let i = 0; i < n; i++) {
    const f = `/tmp/mountgate-dbus-test-${process.pid}-${i}`;
    fs.writeFileSync(f, String(i));
    fds.push(fs.openSync(f, 'r'));
    fs.unlinkSync(f);
  }
  return fds;
}
const ident = (fd: number) => { const st = fs.fstatSync(fd); return `${st.dev}:${st.ino}`; };

// (Re)starts the service if it is not running: each test checks its own
// defect even when an earlier test crashed the service (unpatched dbus-next).
async function ensureService () {
  if (serviceAlive()) return;
  serviceLog = '';
  // env -u NODE_OPTIONS: without tap's loaders (see runClient)
  const proc = spawn('env', ['-u', 'NODE_OPTIONS', process.execPath, path.join(here, 'helpers/service.mjs'), bus.address], {
    stdio: ['ignore', 'pipe', 'pipe']
  });
  service = proc;
  proc.stderr!.on('data', (b: Buffer) => { serviceLog += b.toString(); });
  serviceName = await new Promise<string>((resolve, reject) => {
    proc.once('exit', (code) => reject(new Error(`service exited (${code}): ${serviceLog}`)));
    proc.stdout!.once('data', (b: Buffer) => resolve(b.toString().trim().split(' ')[1] ?? ''));
  });
}

t.before(async () => {
  bus = await startBus();
});
t.beforeEach(ensureService);

t.teardown(async () => {
  for (const c of clients) {
    try { c.disconnect(); } catch {}
  }
  if (service && serviceAlive()) {
    const proc = service;
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGTERM');
    await exited;
  }
  await bus.stop();
});

t.test('defect 1: a burst of 500 pipelined calls carrying fds: each call gets its own fd, the service survives and closes them all', async (t) => {
  const c = await connect();
  const before = await fdCount(c);
  // four different files, so that a call answered with another call's fd shows
  const fds = tmpFiles(4);
  // The service is busy while the burst arrives, so that it then reads many
  // messages at once; a plain call before each fd-carrying one: parsing it,
  // unpatched dbus-next took the fds queued for the calls after it.
  const stall = call(c, 'Stall', 'u', [300]);
  const calls = [];
  for (let i = 0; i < 500; i++) {
    calls.push(call(c, 'Echo', 's', [`call ${i}`]));
    calls.push(call(c, 'Inspect', 'h', [fds[i % 4]]));
  }
  const results = await Promise.allSettled([stall, ...calls]);
  const wrong = calls.map((_, i) => i).filter((i) => {
    const r = results[i + 1]!;
    const expected = i % 2 === 0 ? `call ${i / 2}` : ident(fds[((i - 1) / 2) % 4]!);
    return r.status !== 'fulfilled' || r.value.body[0] !== expected;
  });
  t.equal(wrong.length, 0, 'every call answered, each fd-carrying one with the identity of the fd it sent');
  t.ok(serviceAlive(), `service still running ${serviceLog}`);
  t.equal(await fdCount(c), before, 'service fd count back to where it started');
  for (const fd of fds) fs.closeSync(fd);
});

t.test('defect 1: crafted fd messages (index out of range, fewer fds than declared, undeclared fds) do not crash the service', async (t) => {
  const c = await connect();
  const before = await fdCount(c);
  const fd = fs.openSync('/dev/null', 'r');
  const call1 = { destination: DEST, path: OBJ, interface: DEST, member: 'Inspect' };

  const attacker = await connect();
  // declares 1 fd, sends 1, but the body's fd index is 5
  const oob = await rawSend(attacker, { ...call1, signature: 'h', body: [fd] }, undefined,
    (b) => b.writeUInt32LE(5, b.length - 4));
  t.equal(oob.errorName, 'org.freedesktop.DBus.Error.InvalidArgs', 'fd index out of range: an InvalidArgs error reply');
  t.ok(serviceAlive(), 'service survives an fd index out of range');

  // carries fds but declares none
  const undeclared = await rawSend(attacker, { ...call1, member: 'Echo', signature: 's', body: ['x'] }, [fd, fd]);
  t.ok(serviceAlive(), `service survives undeclared fds (reply: ${undeclared.body ?? undeclared})`);

  // declares 2 fds, carries 1: the daemon drops such a sender; whatever
  // reaches the service must not crash it
  const attacker2 = await connect();
  await rawSend(attacker2, { ...call1, signature: 'hh', body: [fd, fd] }, [fd]);
  t.ok(serviceAlive(), 'service survives a message declaring more fds than it carries');

  t.same((await call(c, 'Echo', 's', ['still here'])).body, ['still here'], 'service keeps answering a normal caller');
  t.equal(await fdCount(c), before, 'service fd count back to where it started');
  fs.closeSync(fd);
});

t.test('defect 2: fds of messages no handler takes are closed', async (t) => {
  const c = await connect();
  const fd = fs.openSync('/dev/null', 'r');
  const before = await fdCount(c);
  const rounds = 20;
  for (let i = 0; i < rounds; i++) {
    await t.rejects(call(c, 'NoSuchMethod', 'h', [fd]), { type: 'org.freedesktop.DBus.Error.UnknownMethod' });
    await t.rejects(call(c, 'Inspect', 'h', [fd], '/no/such/path'), { type: 'org.freedesktop.DBus.Error.UnknownMethod' });
    await t.rejects(call(c, 'Decline', 'h', [fd]), { type: 'org.freedesktop.DBus.Error.UnknownMethod' }, 'handler returned false');
    const thrown = await call(c, 'Throw', 'h', [fd]).then(() => null, (err: any) => err);
    if (!thrown || /\n\s+at /.test(thrown.text)) {
      t.fail(`handler threw: expected an error reply without a stack trace, got ${thrown && thrown.text}`);
    }
    await call(c, 'Inspect', 'h', [fd]); // handled, fd not taken
    // a signal and an unrequested method return, both carrying an fd (no
    // reply to wait for: the next call, delivered after them, is)
    rawSend(c, { type: dbus.MessageType.SIGNAL, destination: serviceName, path: OBJ, interface: DEST, member: 'Ping', signature: 'h', body: [fd] });
    rawSend(c, { type: dbus.MessageType.METHOD_RETURN, destination: serviceName, replySerial: 4242, signature: 'h', body: [fd] });
  }
  t.ok(serviceAlive(), `service still running ${serviceLog}`);
  t.equal(await fdCount(c), before, `service fd count unchanged after ${rounds * 7} fd-carrying messages`);
  fs.closeSync(fd);
});

t.test('defect 2: low-level handler API: msg.sender, usable fds in msg.body, msg.takeFd() keeps an fd open', async (t) => {
  const c = await connect();
  t.equal((await call(c, 'Sender')).body[0], c.name, 'msg.sender is the caller');
  const fd = fs.openSync('/dev/null', 'r');
  t.equal((await call(c, 'Inspect', 'h', [fd])).body[0], ident(fd), 'the fd in msg.body is the caller\'s file');
  const before = await fdCount(c);
  await call(c, 'Keep', 'h', [fd]);
  await call(c, 'Keep', 'h', [fd]);
  t.equal(await fdCount(c), before + 2, 'taken fds stay open');
  t.same((await call(c, 'Release')).body, [2], 'the handler closes what it took');
  t.equal(await fdCount(c), before, 'fd count back to where it started');
  fs.closeSync(fd);
});

t.test('fd in a reply: the client reads through it; the service closes its copy once bus.send() says the reply was written', async (t) => {
  const c = await connect();
  const before = await fdCount(c);
  const bad = [];
  for (let i = 0; i < 50; i++) {
    const reply = await call(c, 'Open', 's', [`secret ${i}`]);
    const fd = reply.body[0];
    const buf = Buffer.alloc(64);
    const n = fs.readSync(fd, buf, 0, 64, 0);
    fs.closeSync(fd); // the fds of a method return belong to the caller
    if (buf.toString('utf8', 0, n) !== `secret ${i}` || reply.fds.length !== 1 || reply.fds[0] !== fd) {
      bad.push(`reply ${i}: fds ${JSON.stringify(reply.fds)}, read ${JSON.stringify(buf.toString('utf8', 0, n))}`);
    }
  }
  t.same(bad, [], '50 replies each carried an fd the client could read through (reply.fds)');
  t.equal(await fdCount(c), before, 'the service closed each reply fd after it was sent');
});

t.test('usocket: the fds of a write that hits EAGAIN before its first byte are still sent', async (t) => {
  const { USocket } = require('usocket');
  const s = new USocket({});
  const writes: [number, number[] | undefined][] = [];
  // stands in for the native socket: the first sendmsg gets EAGAIN (0 bytes)
  s._wrap = {
    drain: null,
    write (data: Buffer, fds?: number[]) {
      writes.push([data.length, fds]);
      return writes.length === 1 ? 0 : data.length;
    }
  };
  const written = new Promise((resolve) => s.write({ data: Buffer.from('message'), fds: [42] }, resolve));
  t.equal(typeof s._wrap.drain, 'function', 'waits for the socket to drain');
  s._wrap.drain();
  await written;
  t.same(writes, [[7, [42]], [7, [42]]], 'the retry carries the fds');
  s._wrap = null;
});

async function runClient (t: any, opts: { uid?: number, gid?: number, userns?: boolean, preload?: string, plain?: boolean }) {
  const dir = fs.mkdtempSync('/tmp/mountgate-dbus-client-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.chmodSync(dir, 0o755);
  const script = path.join(dir, 'client.mjs');
  fs.copyFileSync(path.join(here, 'helpers/client.mjs'), script);
  fs.chmodSync(script, 0o755);
  const nodeArgs = [];
  if (opts.preload) {
    const hook = path.join(dir, path.basename(opts.preload));
    fs.copyFileSync(opts.preload, hook);
    fs.chmodSync(hook, 0o755);
    nodeArgs.push('--require', hook);
  }
  nodeArgs.push(script, bus.address);
  if (opts.plain) nodeArgs.push('plain');
  // env -u NODE_OPTIONS: tap's spawn hook would make the child load tap's
  // process-info recorder, which writes into the repo (as another user)
  const args = ['-u', 'NODE_OPTIONS',
    ...(opts.userns ? ['unshare', '--user', '--map-root-user'] : []), process.execPath, ...nodeArgs];
  const child = spawn('env', args, {
    cwd: dir,
    env: { PATH: process.env.PATH, HOME: dir, MOUNTGATE_TEST_PKG: pkg },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(opts.uid !== undefined ? { uid: opts.uid, gid: opts.gid } : {})
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (b: Buffer) => { out += b.toString(); });
  child.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
  const code = await new Promise((resolve) => child.on('exit', resolve));
  try {
    return JSON.parse(out.trim().split('\n').pop() ?? '');
  } catch {
    return { outcome: 'no output', code, stderr: err };
  }
}

t.test('defect 3: EXTERNAL auth works for a client inside a user namespace', async (t) => {
  const user = `mgdbus${process.pid}`.slice(0, 30);
  execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', user]);
  t.teardown(() => { execFileSync('userdel', [user]); });
  const uid = Number(execFileSync('id', ['-u', user]).toString().trim());
  const gid = Number(execFileSync('id', ['-g', user]).toString().trim());

  const plain = await runClient(t, { uid, gid });
  t.match(plain, { outcome: 'ok', uid, busUid: uid, fdPassed: true }, `unprivileged user: authenticates, calls, passes an fd (${JSON.stringify(plain)})`);
  t.equal(plain.sender, plain.name, 'the service sees the caller as msg.sender');

  const userns = await runClient(t, { uid, gid, userns: true });
  t.match(userns, { outcome: 'ok', uid: 0, busUid: uid, fdPassed: true },
    `unprivileged user as root of its own user namespace: authenticates (the bus sees its real uid), calls, passes an fd (${JSON.stringify(userns)})`);
});

t.test('defect 4: negotiateUnixFd with an unloadable usocket is an error, not a silent fallback', async (t) => {
  const preload = path.join(here, 'helpers/no-usocket.cjs');
  const fdClient = await runClient(t, { preload });
  t.match(fdClient, { outcome: /^(threw|error)$/, message: /usocket/ }, `negotiateUnixFd: true fails, naming usocket (${JSON.stringify(fdClient)})`);
  const plainClient = await runClient(t, { preload, plain: true });
  t.match(plainClient, { outcome: 'ok', fdPassed: false }, `without negotiateUnixFd the plain socket fallback remains (${JSON.stringify(plainClient)})`);
});
