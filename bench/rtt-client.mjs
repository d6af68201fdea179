// Runs AS A TEST USER: times N sequential calls of each kind against the
// broker and prints the samples (ms) as JSON. The baseline is the bus
// daemon's own GetId: the cost of a D-Bus round trip with no broker work.
import { closeSync, openSync, constants } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const pkg = process.env.MOUNTGATE_TEST_PKG;
const require = createRequire(join(pkg, 'package.json'));
const dbus = require('dbus-next');
const [n, dir] = [Number(process.argv[2]), process.argv[3]];

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
closeSync(dirFd);
bus.disconnect();
process.stdout.write(JSON.stringify(samples));
process.exit(0);
