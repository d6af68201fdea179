// A raw D-Bus client of the broker, run AS A TEST USER by the tests. It sends
// exactly what it is told (unvalidated JSON text, pipes or files as directory
// fds, bursts of pipelined calls), so tests see the broker's own refusals.
//   node probe-client.mjs '<ops JSON>'   -> one JSON line per op on stdout
// An image id "$added" stands for the id the last addImage op of the same run returned.
import { execFileSync } from 'node:child_process';
import { closeSync, createWriteStream, existsSync, openSync, readdirSync, unlinkSync, writeFileSync, constants } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const pkg = process.env.MOUNTGATE_TEST_PKG ?? join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..');
const require = createRequire(join(pkg, 'package.json'));
const dbus = require('dbus-next');
const { pipe, sealedMemfd } = await import(join(pkg, 'dist', 'src', 'sys', 'syscalls.js'));
const { recordHeader } = await import(join(pkg, 'dist', 'src', 'client', 'images.js'));

const dest = { destination: 'org.mountgate.Broker1', path: '/org/mountgate/Broker1', interface: 'org.mountgate.Broker1' };

function openSource(src) {
  if (src.kind === 'dir') return openSync(src.path, constants.O_RDONLY | constants.O_DIRECTORY);
  if (src.kind === 'file') return openSync(src.path, constants.O_RDONLY);
  if (src.kind === 'pipe') {
    // A named pipe opened read-write (which never blocks on Linux): a fifo fd.
    if (!existsSync(src.path)) execFileSync('mkfifo', [src.path]);
    return openSync(src.path, constants.O_RDWR);
  }
  throw new Error(`unknown source ${JSON.stringify(src)}`);
}

async function call(bus, member, signature, body) {
  try {
    const reply = await bus.call(new dbus.Message({ ...dest, member, signature, body }));
    for (const x of reply.body) if (typeof x === 'number' && (member === 'BindIdmapped' || member === 'MountImage')) closeSync(x);
    return { ok: true, body: reply.body.map((x) => (typeof x === 'number' ? '<fd>' : x)) };
  } catch (err) {
    return { ok: false, name: err.type, message: err.text ?? err.message };
  }
}

/** A manifest of n empty files in directories of 1000, in path order. */
function synthetic(n) {
  const mtime = { sec: 1700000000, nsec: 0 };
  const entries = [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime }];
  for (let d = 0; entries.length < n; d++) {
    const dir = `/d${String(d).padStart(5, '0')}`;
    entries.push({ path: dir, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime });
    for (let f = 0; f < 1000 && entries.length < n; f++) entries.push({ path: `${dir}/f${String(f).padStart(4, '0')}`, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size: 0 });
  }
  return { version: 1, entries };
}

const ops = JSON.parse(process.argv[2]);
const bus = dbus.sessionBus({ busAddress: process.env.MOUNTGATE_BUS_ADDRESS, negotiateUnixFd: true });
await new Promise((res, rej) => { bus.once('connect', res); bus.once('error', rej); });
let added;
const imageId = (id) => (id === '$added' ? added : id);
for (const op of ops) {
  let out;
  if (op.op === 'info') {
    const r = await call(bus, 'GetInfo', '', []);
    out = r.ok ? { ok: true, info: Object.fromEntries(Object.entries(r.body[0]).map(([k, v]) => [k, v.value])) } : r;
  } else if (op.op === 'bind') {
    const fd = openSource(op.source);
    const text = typeof op.request === 'string' ? op.request : JSON.stringify(op.request ?? {});
    out = await call(bus, 'BindIdmapped', 'hs', [fd, text]);
    closeSync(fd);
  } else if (op.op === 'explain') {
    const fds = op.source ? [openSource(op.source)] : [];
    out = await call(bus, 'Explain', 'ssah', [op.method, JSON.stringify(op.request ?? {}), fds]);
    fds.forEach((fd) => closeSync(fd));
    if (out.ok) out.verdict = JSON.parse(out.body[0]);
  } else if (op.op === 'addImage') {
    // The manifest travels as a sealed memfd, as the client sends it; fdKind
    // 'file' sends an unlinked temp file instead (which the broker refuses).
    const text = typeof op.manifest === 'string' ? op.manifest : JSON.stringify(op.manifest ?? synthetic(op.synthetic));
    let fd;
    if (op.fdKind === 'file') {
      const path = join(tmpdir(), `probe-manifest-${process.pid}-${Math.random().toString(16).slice(2)}.json`);
      writeFileSync(path, text, { mode: 0o600 });
      fd = openSync(path, 'r');
      unlinkSync(path);
    } else {
      fd = sealedMemfd('probe-manifest', Buffer.from(text));
    }
    out = await call(bus, 'AddImage', 'h', [fd]);
    closeSync(fd);
    if (out.ok) {
      out = { ok: true, id: out.body[0], missing: out.body[1] };
      added = out.id;
    }
  } else if (op.op === 'putObjects') {
    // records: [{ digest, content (utf8) or repeat: [text, times], size? }]; holdMs: pause after `partial` bytes of the last record.
    const [r, w] = pipe();
    const pending = call(bus, 'PutObjects', 'h', [r]);
    const ws = createWriteStream(null, { fd: w });
    for (const [k, rec] of op.records.entries()) {
      const content = rec.repeat ? Buffer.from(rec.repeat[0].repeat(rec.repeat[1])) : Buffer.from(rec.content);
      ws.write(recordHeader(rec.digest, rec.size ?? content.length));
      if (k === op.records.length - 1 && op.partial !== undefined) {
        ws.write(content.subarray(0, op.partial));
        process.stderr.write('partial-written\n');
        await new Promise((res) => setTimeout(res, op.holdMs ?? 1000));
      }
      ws.write(k === op.records.length - 1 && op.partial !== undefined ? content.subarray(op.partial) : content);
    }
    ws.end();
    out = await pending;
    closeSync(r);
    if (out.ok) out = { ok: true, objects: Number(out.body[0]), bytes: Number(out.body[1]) };
  } else if (op.op === 'mountImage') {
    out = await call(bus, 'MountImage', 'ss', [imageId(op.id), JSON.stringify(op.request ?? {})]);
    if (out.ok) out = { ok: true, info: JSON.parse(out.body[1]) };
  } else if (op.op === 'listImages') {
    out = await call(bus, 'ListImages', '', []);
    if (out.ok) out = { ok: true, images: JSON.parse(out.body[0]) };
  } else if (op.op === 'removeImage') {
    out = await call(bus, 'RemoveImage', 's', [imageId(op.id)]);
  } else if (op.op === 'raw') {
    out = await call(bus, op.member, op.signature, op.body);
  } else if (op.op === 'burst') {
    // Pipelined: every call is written before any reply is read. The bus
    // daemon allows 128 pending replies per connection, so the calls are
    // spread over several connections to all reach the broker.
    const dir = openSync(op.dir, constants.O_RDONLY | constants.O_DIRECTORY);
    const pipeFd = openSource({ kind: 'pipe', path: op.fifo });
    const perConnection = 100;
    const buses = [];
    for (let k = 0; k < op.count; k += perConnection) {
      const b = dbus.sessionBus({ busAddress: process.env.MOUNTGATE_BUS_ADDRESS, negotiateUnixFd: true });
      await new Promise((res, rej) => { b.once('connect', res); b.once('error', rej); });
      buses.push(b);
    }
    const calls = [];
    for (let k = 0; k < op.count; k++) calls.push(call(buses[Math.floor(k / perConnection)], 'BindIdmapped', 'hs', [k % 2 ? dir : pipeFd, '{}']));
    const results = await Promise.all(calls);
    buses.forEach((b) => b.disconnect());
    closeSync(dir);
    const byName = {};
    for (const r of results) byName[r.ok ? 'ok' : r.name] = (byName[r.ok ? 'ok' : r.name] ?? 0) + 1;
    // Answered: a method return or an error reply with a bus error name; a
    // local failure (the connection gone, no reply) has no name and is not.
    const answered = results.filter((r) => r.ok || (typeof r.name === 'string' && r.name !== '')).length;
    out = { ok: true, sent: op.count, answered, byName, clientFds: readdirSync('/proc/self/fd').length };
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}
bus.disconnect();
process.exit(0);
