// Runs AS A TEST USER for bench/load.ts. Roles:
//   mixed SECONDS CONCURRENCY DIR   keeps CONCURRENCY calls in flight for SECONDS:
//                                   Explain, BindIdmapped of DIR, AddImage+PutObjects
//                                   of a small image of its own, MountImage of it
//   observer SECONDS                one GetInfo every 20 ms, timed
//   soak CYCLES DIR                 CYCLES x (MountImage + BindIdmapped), each fd closed
// Prints one JSON line: {latencies: {kind: {n, p50, p90, p99, max} in ms}, failures: {name: n}, refusals: {name: n}}.
import { closeSync, constants, openSync, createWriteStream } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const pkg = process.env.MOUNTGATE_TEST_PKG;
const require = createRequire(join(pkg, 'package.json'));
const dbus = require('dbus-next');
const { pipe, sealedMemfd } = await import(join(pkg, 'dist', 'src', 'sys', 'syscalls.js'));
const { recordHeader } = await import(join(pkg, 'dist', 'src', 'client', 'images.js'));
const { FsVerityHasher } = await import(join(pkg, 'dist', 'src', 'verity', 'fsverity.js'));

const dest = { destination: 'org.mountgate.Broker1', path: '/org/mountgate/Broker1', interface: 'org.mountgate.Broker1' };
const bus = dbus.sessionBus({ busAddress: process.env.MOUNTGATE_BUS_ADDRESS, negotiateUnixFd: true });
await new Promise((res, rej) => { bus.once('connect', res); bus.once('error', rej); });

const latencies = {};
const failures = {};
const refusals = {};
const refusalNames = new Set(['org.mountgate.Error.LimitExceeded', 'org.mountgate.Error.PolicyDenied', 'org.mountgate.Error.NotFound']);

async function call(kind, member, signature, body) {
  const t0 = performance.now();
  try {
    const reply = await bus.call(new dbus.Message({ ...dest, member, signature, body }));
    (latencies[kind] ??= []).push(performance.now() - t0);
    return reply.body;
  } catch (err) {
    (latencies[kind] ??= []).push(performance.now() - t0);
    const name = err.type ?? err.message;
    if (refusalNames.has(name)) refusals[name] = (refusals[name] ?? 0) + 1;
    else {
      const key = `${kind}: ${name}: ${String(err.text ?? '').slice(0, 120)}`;
      failures[key] = (failures[key] ?? 0) + 1;
    }
    return undefined;
  }
}

const content = Buffer.from(`load ${process.getuid()} ${Math.random()}\n`.repeat(50));
const hasher = new FsVerityHasher();
hasher.update(content);
const digest = hasher.digest().toString('hex');
const mtime = { sec: 1700000000, nsec: 0 };
const manifest = {
  version: 1,
  name: `load-${process.getuid()}`,
  entries: [
    { path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime },
    ...Array.from({ length: 200 }, (_, k) => ({ path: `/f${String(k).padStart(4, '0')}`, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size: content.length, digest })),
  ],
};

async function addImage() {
  const fd = sealedMemfd('load', Buffer.from(JSON.stringify(manifest)));
  const body = await call('AddImage', 'AddImage', 'h', [fd]);
  closeSync(fd);
  if (!body) return undefined;
  const [imageId, missing, listFd] = body;
  closeSync(listFd);
  if (missing > 0) {
    const [r, w] = pipe();
    const put = call('PutObjects', 'PutObjects', 'h', [r]);
    const ws = createWriteStream(null, { fd: w });
    ws.write(recordHeader(digest, content.length));
    ws.end(content);
    await put;
    closeSync(r);
  }
  return imageId;
}

async function mountImage(imageId) {
  const body = await call('MountImage', 'MountImage', 'ss', [imageId, '{}']);
  if (body) closeSync(body[0]);
}

async function bind(dir) {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  const body = await call('BindIdmapped', 'BindIdmapped', 'hs', [fd, '{}']);
  closeSync(fd);
  if (body) closeSync(body[0]);
}

async function explain(dir) {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  await call('Explain', 'Explain', 'ssah', ['BindIdmapped', '{}', [fd]]);
  closeSync(fd);
}

const [role, a, b, c] = process.argv.slice(2);
if (role === 'observer') {
  const end = Date.now() + Number(a) * 1000;
  while (Date.now() < end) {
    await call('GetInfo', 'GetInfo', '', []);
    await new Promise((res) => setTimeout(res, 20));
  }
} else if (role === 'mixed') {
  const end = Date.now() + Number(a) * 1000;
  const dir = c;
  const imageId = await addImage();
  const kinds = [() => explain(dir), () => bind(dir), () => addImage(), () => (imageId ? mountImage(imageId) : explain(dir))];
  const worker = async () => {
    for (let k = Math.floor(Math.random() * 4); Date.now() < end; k++) await kinds[k % kinds.length]();
  };
  await Promise.all(Array.from({ length: Number(b) }, worker));
} else if (role === 'soak') {
  const dir = b;
  const imageId = await addImage();
  for (let k = 0; k < Number(a); k++) {
    await mountImage(imageId);
    await bind(dir);
  }
}
bus.disconnect();
// Quantiles, not samples: the output stays small however long the run.
const q = (xs, p) => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))];
const summary = Object.fromEntries(Object.entries(latencies).map(([kind, xs]) => {
  xs.sort((x, y) => x - y);
  return [kind, { n: xs.length, p50: q(xs, 0.5), p90: q(xs, 0.9), p99: q(xs, 0.99), max: xs[xs.length - 1] }];
}));
process.stdout.write(`${JSON.stringify({ latencies: summary, failures, refusals })}\n`);
process.exit(0);
