// Test service for test/dbus: a dbus-next service built on the LOW-LEVEL API
// (bus.addMethodHandler), the way the mountgate broker is. Run as
//   node service.mjs <bus address>
// It owns org.mountgate.Test, prints "ready <unique name>" once it does, and
// logs anything unexpected to stderr. Methods on /org/mountgate/Test,
// interface org.mountgate.Test:
//   Echo(s) -> s          plain call, no fds
//   Stall(u)              blocks the event loop for u ms (so that calls pile
//                         up in the socket and are read in one go)
//   FdCount() -> u        entries of /proc/self/fd
//   Inspect(h) -> s       uses the fd during the handler, does not take it:
//                         dbus-next closes it after dispatch
//   Sender() -> s         msg.sender as the handler sees it
//   Decline(h)            handler returns false (dbus-next answers UnknownMethod)
//   Throw(h)              handler throws
//   Keep(h) -> u          takes ownership of the fd (msg.takeFd) and keeps it
//   Release() -> u        closes the kept fds, returns how many
//   Open(s) -> h          returns an fd to an unlinked file holding the string;
//                         closes its own copy once the reply is flushed
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

// `npx tap test/dbus` also runs this file: without arguments it is inert.
if (process.argv.length < 3) process.exit(0);

const require = createRequire(import.meta.url);
const dbus = require('dbus-next');
const { Message } = dbus;

const IFACE = 'org.mountgate.Test';
const OBJ = '/org/mountgate/Test';

const bus = dbus.sessionBus({ busAddress: process.argv[2], negotiateUnixFd: true });
bus.on('error', (err) => console.error('service: bus error:', err && err.message));

const kept = [];
let tmpSeq = 0;

function reply (msg, signature, body) {
  return bus.send(Message.newMethodReturn(msg, signature, body));
}

bus.addMethodHandler((msg) => {
  if (msg.path !== OBJ || msg.interface !== IFACE) return false;
  switch (msg.member) {
    case 'Echo':
      reply(msg, 's', [msg.body[0]]);
      return true;
    case 'Stall':
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, msg.body[0]);
      reply(msg, '', []);
      return true;
    case 'FdCount':
      reply(msg, 'u', [fs.readdirSync('/proc/self/fd').length]);
      return true;
    case 'Sender':
      reply(msg, 's', [msg.sender]);
      return true;
    case 'Inspect': {
      const st = fs.fstatSync(msg.body[0]);
      reply(msg, 's', [`${st.dev}:${st.ino}`]);
      return true;
    }
    case 'Decline':
      return false;
    case 'Throw':
      throw new Error('handler failed on purpose');
    case 'Keep':
      kept.push(msg.takeFd(msg.body[0]));
      reply(msg, 'u', [kept.length]);
      return true;
    case 'Release': {
      const n = kept.length;
      for (const fd of kept.splice(0)) fs.closeSync(fd);
      reply(msg, 'u', [n]);
      return true;
    }
    case 'Open': {
      const file = path.join(os.tmpdir(), `mountgate-dbus-open-${process.pid}-${tmpSeq++}`);
      fs.writeFileSync(file, msg.body[0], { mode: 0o600 });
      const fd = fs.openSync(file, 'r');
      fs.unlinkSync(file);
      // The fd may be closed only once the reply carrying it was flushed.
      reply(msg, 'h', [fd]).then(() => fs.closeSync(fd), (err) => {
        console.error('service: sending the reply failed:', err.message);
        fs.closeSync(fd);
      });
      return true;
    }
    default:
      return false;
  }
});

bus.requestName(IFACE, 0).then(() => {
  process.stdout.write(`ready ${bus.name}\n`);
}, (err) => {
  console.error('service: requestName failed:', err.message);
  process.exit(1);
});
