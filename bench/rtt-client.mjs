// Runs AS A TEST USER: times N sequential calls of each kind against the
// broker and prints the samples (ms) as JSON. The baseline is the bus
// daemon's own GetId: the cost of a D-Bus round trip with no broker work.
// With IDLE_MS, also the price of helpers started on demand: COLD calls of
// BindIdmapped (its fd prober) and of AddImage of a two-entry manifest (its
// build helper), each after IDLE_MS of quiet (the helpers were let go), and
// as many AddImage calls back to back (warm).
//   node rtt-client.mjs N DIR [IDLE_MS COLD]
import { closeSync, openSync, constants } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const pkg = process.env.MOUNTGATE_TEST_PKG;
const require = createRequire(join(pkg, 'package.json'));
const dbus = require('dbus-next');
const [n, dir] = [Number(process.argv[2]), process.argv[3]];
const idleMs = Number(process.argv[4] ?? 0);
const cold = Number(process.argv[5] ?? 0);
const { sealedMemfd } = await import(join(pkg, 'dist', 'src', 'sys', 'syscalls.js'));

const bus = dbus.sessionBus({ busAddress: process.env.MOUNTGATE_BUS_ADDRESS, negotiateUnixFd: true });
await new Promise((res, rej) => { bus.once('connect', res); bus.once('error', rej); });
const broker = { destination: 'org.mountgate.Broker1', path: '/org/mountgate/Broker1', interface: 'org.mountgate.Broker1' };
const daemon = { destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus' };
const dirFd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);

const kinds = {
  baseline: () => bus.call(new dbus.Message({ ...daemon, member: 'GetId' })),
  GetInfo: () => bus.call(new dbus.Message({ ...broker, member: 'GetInfo' })),
  BindIdmapped: async () => {
    const reply = await bus.call(new dbus.Message({ ...broker, member: 'BindIdmapped', signature: 'hs', body: [dirFd, '{}'] }));
    closeSync(reply.body[0]);
  },
};
let serial = 0;
/** AddImage of a manifest of its own (a new image each time: nothing is cached), then RemoveImage. */
async function addImage() {
  const manifest = { version: 1, entries: [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: { sec: 1700000000, nsec: 0 } }, { path: '/f', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: { sec: 1700000000, nsec: 0 }, size: 0 }] };
  manifest.entries[1].path = `/f${serial++}`;
  const fd = sealedMemfd('rtt-manifest', Buffer.from(JSON.stringify(manifest)));
  const t0 = process.hrtime.bigint();
  const reply = await bus.call(new dbus.Message({ ...broker, member: 'AddImage', signature: 'h', body: [fd] }));
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  closeSync(fd);
  closeSync(reply.body[2]);
  await bus.call(new dbus.Message({ ...broker, member: 'RemoveImage', signature: 's', body: [reply.body[0]] }));
  return ms;
}
const samples = {};
for (const [name, fn] of Object.entries(kinds)) {
  for (let k = 0; k < 20; k++) await fn(); // warm-up (JIT, caches)
  samples[name] = [];
  for (let k = 0; k < n; k++) {
    const t0 = process.hrtime.bigint();
    await fn();
    samples[name].push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
}
if (cold > 0) {
  samples['AddImage, warm'] = [];
  for (let k = 0; k < cold; k++) samples['AddImage, warm'].push(await addImage());
  for (const [name, fn] of [['BindIdmapped, after idle', kinds.BindIdmapped], ['AddImage, after idle', addImage]]) {
    samples[name] = [];
    for (let k = 0; k < cold; k++) {
      await new Promise((res) => setTimeout(res, idleMs));
      const t0 = process.hrtime.bigint();
      const ms = await fn();
      samples[name].push(typeof ms === 'number' ? ms : Number(process.hrtime.bigint() - t0) / 1e6);
    }
  }
}
closeSync(dirFd);
bus.disconnect();
process.stdout.write(JSON.stringify(samples));
process.exit(0);
