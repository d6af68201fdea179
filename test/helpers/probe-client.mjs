// A raw D-Bus client of the broker, run AS A TEST USER by the tests. It sends
// exactly what it is told (unvalidated JSON text, pipes or files as directory
// fds, bursts of pipelined calls), so tests see the broker's own refusals.
//   node probe-client.mjs '<ops JSON>'   -> one JSON line per op on stdout
// An image id "$added" stands for the id the last addImage op of the same run returned.
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, createWriteStream, existsSync, openSync, readdirSync, constants } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { Socket } from 'node:net';
import { createHash } from 'node:crypto';

const pkg = process.env.MOUNTGATE_TEST_PKG ?? join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..');
const require = createRequire(join(pkg, 'package.json'));
const dbus = require('dbus-next');
const { pipe, sealedMemfd, fileSeals, IMMUTABLE_SEALS } = await import(join(pkg, 'dist', 'src', 'sys', 'syscalls.js'));
// Fds of every other kind (sockets, O_PATH, memfds, ...), for the adversarial tests.
const { fdFactory } = await import(join(pkg, 'test', 'adversarial', 'helpers', 'fd-factory.mjs'));
const fds = fdFactory(pkg);
/** Fds kept across ops (mount fds the broker returned, with keepFds). */
const kept = [];
let added;
const imageId = (id) => (id === '$added' ? added : id);
const { recordHeader } = await import(join(pkg, 'dist', 'src', 'client', 'images.js'));
const { readDigestList } = await import(join(pkg, 'dist', 'src', 'client', 'broker.js'));

const dest = { destination: 'org.mountgate.Broker1', path: '/org/mountgate/Broker1', interface: 'org.mountgate.Broker1' };

function openSource(src) {
  if (src.kind === 'dir') return openSync(src.path, constants.O_RDONLY | constants.O_DIRECTORY);
  if (src.kind === 'file') return openSync(src.path, constants.O_RDONLY);
  if (src.kind === 'pipe') {
    // A named pipe opened read-write (which never blocks on Linux): a fifo fd.
    if (!existsSync(src.path)) execFileSync('mkfifo', [src.path]);
    return openSync(src.path, constants.O_RDWR);
  }
  return fds.make(src, { kept }).fd;
}

/** Any fd kind with its own cleanup (the other ends of pairs and pipes stay open until then). */
function openAny(src) {
  if (src.kind === 'dir' || src.kind === 'file' || src.kind === 'pipe') {
    const fd = openSource(src);
    return { fd, close: () => closeSync(fd) };
  }
  return fds.make(src, { kept });
}

// Every answer carries ms, the time from sending the call to its answer.
async function call(bus, member, signature, body, opts = {}) {
  const started = performance.now();
  const ms = () => Math.round(performance.now() - started);
  try {
    const reply = await bus.call(new dbus.Message({ ...(opts.dest ?? dest), member, signature, body }));
    if (member === 'AddImage') {
      // The missing list's memfd: read, closed, and shown as the list.
      const [id, count, listFd] = reply.body;
      try {
        const seals = fileSeals(listFd);
        return { ok: true, ms: ms(), body: [id, readDigestList(listFd, count)], listSealed: seals !== undefined && (seals & IMMUTABLE_SEALS) === IMMUTABLE_SEALS };
      } finally {
        closeSync(listFd);
      }
    }
    for (const x of reply.body) {
      if (typeof x === 'number' && (member === 'BindIdmapped' || member === 'MountImage')) {
        if (opts.keepFds) kept.push(x);
        else closeSync(x);
      }
    }
    return { ok: true, ms: ms(), body: reply.body.map((x) => (typeof x === 'number' ? '<fd>' : x)) };
  } catch (err) {
    const message = err.text ?? err.message;
    // Huge messages are reported by size, with their head (tests check the cap).
    return { ok: false, ms: ms(), name: err.type, message: typeof message === 'string' && message.length > 65536 ? message.slice(0, 65536) : message, messageLength: typeof message === 'string' ? message.length : undefined };
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

/** A request's JSON text: op.request (text or object), or one with a huge junk string of op.hugeRequest characters. */
function requestText(op) {
  if (op.hugeRequest) return `{"junk":"${'A'.repeat(op.hugeRequest)}"}`;
  return typeof op.request === 'string' ? op.request : JSON.stringify(op.request ?? {});
}

/** The manifest text: op.manifest, a synthetic one, or a hostile one (hugeKey: an unknown key of n characters; badEntries: n invalid entries). */
function manifestText(op) {
  const mtime = { sec: 1700000000, nsec: 0 };
  if (op.hugeKey) return `{"version":1,"${'K'.repeat(op.hugeKey)}":1,"entries":[{"path":"/","type":"dir","mode":493,"uid":0,"gid":0,"mtime":{"sec":1,"nsec":0}}]}`;
  if (op.badEntries) {
    const bad = JSON.stringify({ path: 'relative', type: 'nonsense', mode: -1, uid: -1, gid: -1, mtime });
    return `{"version":1,"entries":[${JSON.stringify({ path: '/', type: 'dir', mode: 493, uid: 0, gid: 0, mtime })}${`,${bad}`.repeat(op.badEntries)}]}`;
  }
  if (op.gen) return JSON.stringify(generated(op.gen));
  if (typeof op.manifest === 'string') return op.manifest;
  return JSON.stringify(op.manifest ?? synthetic(op.synthetic));
}

/** The k-th digest of a generated 'objects' manifest. */
const madeUpDigest = (k) => createHash('sha256').update(`object ${k}`).digest('hex');

/**
 * Manifests built to exhaust the writer, made here (too big for argv):
 * depth: one chain of n nested directories; hardlinks: one file and n hardlinks to it;
 * xattrs: n files each with `count` xattrs of `size` value bytes.
 */
function generated(gen) {
  const mtime = { sec: 1700000000, nsec: 0 };
  const dir = (path) => ({ path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime });
  const file = (path, extra = {}) => ({ path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size: 0, ...extra });
  const entries = [dir('/')];
  if (gen.kind === 'depth') {
    let path = '';
    for (let k = 0; k < gen.n; k++) entries.push(dir((path += '/a')));
  } else if (gen.kind === 'hardlinks') {
    entries.push(file('/a-target'));
    entries.push(dir('/links'));
    for (let k = 0; k < gen.n; k++) entries.push({ path: `/links/l${String(k).padStart(8, '0')}`, type: 'hardlink', target: '/a-target' });
  } else if (gen.kind === 'objects') {
    // n files of one byte, each its own (made-up) digest: n objects to upload.
    for (let d = 0; d * 1000 < gen.n; d++) {
      const dirPath = `/d${String(d).padStart(5, '0')}`;
      entries.push(dir(dirPath));
      for (let k = d * 1000; k < Math.min(gen.n, (d + 1) * 1000); k++) entries.push(file(`${dirPath}/f${String(k).padStart(8, '0')}`, { size: 1, digest: madeUpDigest(k) }));
    }
  } else if (gen.kind === 'xattrs') {
    for (let k = 0; k < gen.n; k++) {
      // Distinct values per entry, so nothing can be shared between entries.
      const xattrs = Array.from({ length: gen.count }, (_, x) => ({ key: `user.x${x}`, value: Buffer.alloc(gen.size, `${k}-${x}-`).toString('base64') }));
      entries.push(file(`/f${String(k).padStart(8, '0')}`, { xattrs }));
    }
  } else throw new Error(`unknown generator ${gen.kind}`);
  return { version: 1, entries };
}

const ops = JSON.parse(process.argv[2]);
const bus = dbus.sessionBus({ busAddress: process.env.MOUNTGATE_BUS_ADDRESS, negotiateUnixFd: true });
await new Promise((res, rej) => { bus.once('connect', res); bus.once('error', rej); });
async function runOp(bus, op) {
  let out;
  if (op.delayMs) await new Promise((res) => setTimeout(res, op.delayMs));
  if (op.op === 'info') {
    const r = await call(bus, 'GetInfo', '', []);
    out = r.ok ? { ok: true, ms: r.ms, info: Object.fromEntries(Object.entries(r.body[0]).map(([k, v]) => [k, v.value])) } : r;
  } else if (op.op === 'bind') {
    // source: any fd kind of fd-factory.mjs; keepFds keeps the returned mount fd for later ops ({kind: 'kept'}).
    const src = openAny(op.source);
    out = await call(bus, 'BindIdmapped', 'hs', [src.fd, requestText(op)], { keepFds: op.keepFds });
    src.close();
  } else if (op.op === 'explain') {
    // source: one fd; sources: several (each any kind), e.g. the most a message may carry.
    const srcs = (op.sources ?? (op.source ? [op.source] : [])).map(openAny);
    out = await call(bus, 'Explain', 'ssah', [op.method, requestText(op), srcs.map((x) => x.fd)]);
    srcs.forEach((x) => x.close());
    if (out.ok) out.verdict = JSON.parse(out.body[0]);
  } else if (op.op === 'addImage') {
    // The manifest travels as a sealed memfd, as the client sends it; `fd` sends
    // it (or nothing of it) as another kind: {kind: 'file-data'} is an unlinked
    // temp file, {kind: 'memfd', size} an unsealed sparse memfd, any fd-factory kind.
    // fdKind 'file' is short for fd {kind: 'file-data'} (which the broker refuses).
    const text = manifestText(op);
    const fdSpec = op.fd ?? (op.fdKind === 'file' ? { kind: 'file-data' } : undefined);
    const src = fdSpec ? openAny({ data: text, ...fdSpec }) : { fd: sealedMemfd('probe-manifest', Buffer.from(text)), close() { closeSync(this.fd); } };
    out = await call(bus, 'AddImage', 'h', [src.fd]);
    src.close();
    if (out.ok) {
      const missing = out.body[1];
      out = { ok: true, ms: out.ms, id: out.body[0], missingCount: missing.length, listSealed: out.listSealed, missing };
      if (op.gen?.kind === 'objects') {
        // Too many to print: whether the list is exactly the generated digests, in byte order.
        const wanted = Array.from({ length: op.gen.n }, (_, k) => madeUpDigest(k)).sort();
        out.missingIsEveryObjectSorted = missing.length === wanted.length && missing.every((d, k) => d === wanted[k]);
        delete out.missing;
      }
      added = out.id;
    }
  } else if (op.op === 'putObjects' && op.fd) {
    // A stream of a wrong (or odd) kind, nothing written to it: the refusal alone.
    const src = openAny(op.fd);
    out = await call(bus, 'PutObjects', 'h', [src.fd]);
    src.close();
  } else if (op.op === 'putObjects') {
    // records: [{ digest, content (utf8) or repeat: [text, times], size? }]; holdMs: pause after `partial` bytes of the last record.
    // stream: 'pipe' (default) or 'socket' (a connected AF_UNIX stream socketpair). leave: exit the process at the pause.
    let r, w;
    if (op.stream === 'socket') {
      const pair = fds.make({ kind: 'socketpair-stream' });
      [r, w] = [pair.fd, pair.keep[0]];
    } else [r, w] = pipe();
    const pending = call(bus, 'PutObjects', 'h', [r]);
    const ws = op.stream === 'socket' ? new Socket({ fd: w, readable: false, writable: true }) : createWriteStream(null, { fd: w });
    for (const [k, rec] of op.records.entries()) {
      const content = rec.repeat ? Buffer.from(rec.repeat[0].repeat(rec.repeat[1])) : Buffer.from(rec.content);
      ws.write(recordHeader(rec.digest, rec.size ?? content.length));
      if (k === op.records.length - 1 && op.partial !== undefined) {
        ws.write(content.subarray(0, op.partial));
        process.stderr.write('partial-written\n');
        await new Promise((res) => setTimeout(res, op.holdMs ?? 1000));
        if (op.leave) process.exit(0);
      }
      ws.write(k === op.records.length - 1 && op.partial !== undefined ? content.subarray(op.partial) : content);
    }
    // holdOpenMs: keep the stream open (a call in flight) before ending it.
    if (op.holdOpenMs) await new Promise((res) => setTimeout(res, op.holdOpenMs));
    ws.end();
    out = await pending;
    closeSync(r);
    if (out.ok) out = { ok: true, objects: Number(out.body[0]), bytes: Number(out.body[1]) };
  } else if (op.op === 'mountImage') {
    // exec: a path in the image, run through the mount the broker returned (a
    // child given its fd as fd 3 execs /proc/self/fd/3/PATH): what it printed, or the errno.
    out = await call(bus, 'MountImage', 'ss', [imageId(op.id), JSON.stringify(op.request ?? {})], { keepFds: op.exec !== undefined });
    if (out.ok) {
      let ran;
      if (op.exec !== undefined) {
        const fd = kept.pop();
        const r = spawnSync(`/proc/self/fd/3/${op.exec}`, [], { stdio: ['ignore', 'pipe', 'pipe', fd], timeout: 10000 });
        closeSync(fd);
        ran = r.error ? r.error.code : r.stdout.toString().trim();
      }
      out = { ok: true, info: JSON.parse(out.body[1]), ...(ran !== undefined ? { ran } : {}) };
    }
  } else if (op.op === 'listImages') {
    out = await call(bus, 'ListImages', '', []);
    if (out.ok) out = { ok: true, images: JSON.parse(out.body[0]) };
  } else if (op.op === 'removeImage') {
    // request: a RemoveRequest object; requestText: the argument as is; else the bare id.
    out = await call(bus, 'RemoveImage', 's', [op.requestText ?? (op.request ? JSON.stringify(op.request) : imageId(op.id))]);
  } else if (op.op === 'raw') {
    // dest overrides path/interface (unknown members and interfaces on the broker path).
    // huge: { index, char, count, prefix?, suffix? } makes body[index] a string too big for argv.
    const body = [...op.body];
    if (op.huge) body[op.huge.index] = `${op.huge.prefix ?? ''}${op.huge.char.repeat(op.huge.count)}${op.huge.suffix ?? ''}`;
    // keptFds: numbers in the body are indices of fds kept by earlier ops (open), sent as those fds.
    const asFd = (x) => (typeof x === 'number' ? kept[x] : Array.isArray(x) ? x.map(asFd) : x);
    if (op.keptFds) body.splice(0, body.length, ...body.map(asFd));
    out = await call(bus, op.member, op.signature, body, { dest: op.dest ? { ...dest, ...op.dest } : undefined });
  } else if (op.op === 'parallel') {
    // ops at once; connections: true gives each its own bus connection.
    const buses = [];
    const results = await Promise.all(op.ops.map(async (o) => {
      let b = bus;
      if (op.connections) {
        b = dbus.sessionBus({ busAddress: process.env.MOUNTGATE_BUS_ADDRESS, negotiateUnixFd: true });
        await new Promise((res, rej) => { b.once('connect', res); b.once('error', rej); });
        buses.push(b);
      }
      return runOp(b, o);
    }));
    buses.forEach((b) => b.disconnect());
    out = { ok: true, results };
  } else if (op.op === 'leave') {
    // Sends a call and exits at once, before any answer: the broker must cope with a caller that is gone.
    const src = op.source ? openAny(op.source) : undefined;
    const member = op.member ?? 'GetInfo';
    const signature = { GetInfo: '', BindIdmapped: 'hs', AddImage: 'h', ListImages: '' }[member];
    const body = { GetInfo: [], ListImages: [], BindIdmapped: [src?.fd, requestText(op)], AddImage: [src?.fd] }[member];
    // AddImage's manifest (a sealed memfd) from the op's manifest fields, when no source is given.
    if (member === 'AddImage' && !src) body[0] = sealedMemfd('probe-manifest', Buffer.from(manifestText(op)));
    if (op.hogBytes) {
      // Another connection first queues a call of hogBytes for the broker: while the broker reads and
      // parses it, this connection's calls wait in the bus daemon behind it, and this caller leaves.
      const hog = dbus.sessionBus({ busAddress: process.env.MOUNTGATE_BUS_ADDRESS, negotiateUnixFd: true });
      await new Promise((res, rej) => { hog.once('connect', res); hog.once('error', rej); });
      for (let k = 0; k < (op.hogs ?? 1); k++) await hog.send(new dbus.Message({ ...dest, member: 'Explain', signature: 'ssah', body: ['GetInfo', `{"junk":"${'A'.repeat(op.hogBytes)}"}`, []] }));
    }
    for (let k = 0; k < (op.count ?? 1); k++) bus.send(new dbus.Message({ ...dest, member, signature, body }));
    // Garbage right behind the calls: the bus daemon reads it with them and drops the connection at
    // once, before the broker can ask who sent them (ending the process is slower than the broker).
    if (!op.afterMs) {
      const stream = bus._connection.stream;
      const garbage = Buffer.alloc(64, 0xff);
      if (stream.supportsUnixFd) stream.write({ data: garbage, fds: [] });
      else stream.write(garbage);
      stream.end();
    }
    await new Promise((res) => setTimeout(res, op.afterMs ?? 50));
    process.stdout.write(`${JSON.stringify({ ok: true, left: true })}\n`);
    process.exit(0);
  } else if (op.op === 'open') {
    // Opens an fd now and keeps it for later ops ({kind: 'kept', index}); the fd stays open until the end.
    const src = openAny(op.source);
    kept.push(src.fd);
    out = { ok: true, index: kept.length - 1 };
  } else if (op.op === 'waitFile') {
    // Waits until the test creates a file (e.g. after it stopped a FUSE daemon).
    const end = Date.now() + (op.timeoutMs ?? 30000);
    while (!existsSync(op.path) && Date.now() < end) await new Promise((res) => setTimeout(res, 50));
    out = { ok: existsSync(op.path) };
  } else if (op.op === 'sleep') {
    await new Promise((res) => setTimeout(res, op.ms));
    out = { ok: true };
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
    // And what each answer said, by kind of source: the counts alone could not tell why a run went otherwise.
    const said = {};
    results.forEach((r, k) => {
      byName[r.ok ? 'ok' : r.name] = (byName[r.ok ? 'ok' : r.name] ?? 0) + 1;
      if (r.ok) return;
      const key = `${k % 2 ? 'dir' : 'pipe'} ${r.name}: ${String(r.message ?? '').replace(/\d+/g, 'N').slice(0, 160)}`;
      said[key] = (said[key] ?? 0) + 1;
    });
    // Answered: a method return or an error reply with a bus error name; a
    // local failure (the connection gone, no reply) has no name and is not.
    const answered = results.filter((r) => r.ok || (typeof r.name === 'string' && r.name !== '')).length;
    out = { ok: true, sent: op.count, answered, byName, said, clientFds: readdirSync('/proc/self/fd').length };
  }
  return out;
}

for (const op of ops) process.stdout.write(`${JSON.stringify(await runOp(bus, op))}\n`);
bus.disconnect();
process.exit(0);
