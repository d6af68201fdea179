// Client run in a child process by test/dbus (possibly as another user,
// inside a user namespace, or with usocket made unloadable). Copied into a
// temp dir readable by that user; loads dbus-next from the package root given
// in MOUNTGATE_TEST_PKG. Usage: node client.mjs <bus address> [plain]
// ("plain": without negotiateUnixFd). Prints one JSON line:
//   {"outcome":"ok","uid":…,"busUid":…,"sender":…,"name":…,"fdPassed":bool}
//   {"outcome":"threw"|"error","message":…}
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

// `npx tap test/dbus` also runs this file: without arguments it is inert.
if (process.argv.length < 3) process.exit(0);

const require = createRequire(path.join(process.env.MOUNTGATE_TEST_PKG, 'package.json'));
const dbus = require('dbus-next');
const { Message } = dbus;
const [address, mode] = process.argv.slice(2);
const fdPassing = mode !== 'plain';

function done (result) {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}
setTimeout(() => done({ outcome: 'timeout' }), 10000).unref();

let bus;
try {
  bus = dbus.sessionBus({ busAddress: address, negotiateUnixFd: fdPassing });
} catch (err) {
  done({ outcome: 'threw', message: err.message });
}
bus.on('error', (err) => done({ outcome: 'error', message: String(err && err.message ? err.message : err) }));
bus.on('connect', async () => {
  try {
    const call = (dest, obj, iface, member, signature = '', body = []) =>
      bus.call(new Message({ destination: dest, path: obj, interface: iface, member, signature, body }));
    const busUid = (await call('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus',
      'GetConnectionUnixUser', 's', [bus.name])).body[0];
    const sender = (await call('org.mountgate.Test', '/org/mountgate/Test', 'org.mountgate.Test', 'Sender')).body[0];
    let fdPassed = false;
    if (fdPassing) {
      const fd = fs.openSync('/dev/null', 'r');
      const st = fs.fstatSync(fd);
      const seen = (await call('org.mountgate.Test', '/org/mountgate/Test', 'org.mountgate.Test', 'Inspect', 'h', [fd])).body[0];
      fdPassed = seen === `${st.dev}:${st.ino}`;
      fs.closeSync(fd);
    }
    done({ outcome: 'ok', uid: process.getuid(), busUid, sender, name: bus.name, fdPassed });
  } catch (err) {
    done({ outcome: 'error', message: err.message });
  }
});
