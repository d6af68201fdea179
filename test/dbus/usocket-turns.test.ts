// Regression tests for the turn-taking parts of patches/usocket+1.1.0.patch
// (and the corking in patches/dbus-next+0.10.2.patch), on a real socketpair:
//   - the native read loop read until EAGAIN, running each chunk's handlers
//     before reading again, so a peer that kept the socket non-empty (a bus
//     under load) held the event loop for seconds: timers (fd-probe
//     deadlines) and every other socket waited. Now one chunk per turn.
//   - corked writes leave in as few sends as their fds allow, in order, each
//     write's callback called, and fds still travel with their own message.
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import * as sys from '../../src/sys/syscalls.js';

const require = createRequire(import.meta.url);
const { USocket } = require('usocket') as { USocket: new (opts: { fd: number }) => any };

t.test('a peer that never lets the socket run dry does not hold the event loop', async (tt) => {
  const [mine, theirs] = sys.socketpair();
  // The peer keeps 64 small messages in flight for two seconds, sending the next as soon as one is answered (as callers of a bus service do).
  const peer = spawn(process.execPath, ['-e', `
    const net = require('net'); const s = new net.Socket({ fd: 3 }); const msg = Buffer.alloc(100, 120); const end = Date.now() + 2000;
    let pending = 0;
    s.on('data', (d) => { pending += d.length; let n = 0; while (pending >= 100) { pending -= 100; n++; }
      if (Date.now() < end) s.write(Buffer.alloc(100 * n, 120)); else s.destroy(); });
    s.on('close', () => process.exit(0));
    s.write(Buffer.concat(Array.from({ length: 64 }, () => msg)));
  `], { stdio: ['ignore', 'ignore', 'inherit', theirs] });
  closeSync(theirs);
  const sock = new USocket({ fd: mine });
  let answered = 0;
  let pending = 0;
  sock.on('readable', () => {
    for (let got = sock.read(); got; got = sock.read()) {
      pending += got.length;
      while (pending >= 100) {
        pending -= 100;
        // Some work per message, then its answer.
        const until = performance.now() + 0.1;
        while (performance.now() < until);
        sock.write({ data: Buffer.alloc(100, 121) });
        answered++;
      }
    }
  });
  sock.on('error', () => undefined);
  // A 10 ms timer, re-armed for as long as the peer runs: its worst lateness.
  let worst = 0;
  let ticks = 0;
  await new Promise<void>((resolve) => {
    let last = performance.now();
    const tick = () => {
      const now = performance.now();
      worst = Math.max(worst, now - last - 10);
      last = now;
      ticks++;
      if (peer.exitCode === null) setTimeout(tick, 10);
      else resolve();
    };
    setTimeout(tick, 10);
  });
  sock.destroy();
  tt.ok(answered > 1000, `the messages kept flowing (${answered} answered)`);
  tt.ok(ticks > 20, `the timer kept firing meanwhile (${ticks} times)`);
  tt.ok(worst < 500, `no turn of the loop was held for long (worst timer lateness ${worst.toFixed(0)} ms)`);
});

t.test('corked writes arrive whole and in order, fds with their own message, every callback called', async (tt) => {
  const dir = mkdtempSync(join(tmpdir(), 'mountgate-usocket.'));
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'passed'), 'the passed file\n');
  const [a, b] = sys.socketpair();
  const sender = new USocket({ fd: a });
  const receiver = new USocket({ fd: b });
  const fd = openSync(join(dir, 'passed'), 'r');
  const called: string[] = [];
  sender.cork();
  for (const [k, text] of ['one ', 'two ', 'three ', 'with-fd ', 'four ', 'five'].entries()) {
    const chunk = k === 3 ? { data: Buffer.from(text), fds: [fd] } : { data: Buffer.from(text) };
    sender.write({ ...chunk, callback: () => called.push(`cb ${text.trim()}`) }, () => called.push(`done ${text.trim()}`));
  }
  process.nextTick(() => sender.uncork());
  let text = '';
  const fds: number[] = [];
  await new Promise<void>((resolve) => {
    receiver.on('readable', () => {
      for (let got = receiver.read(null, null); got && (got.data || got.fds.length); got = receiver.read(null, null)) {
        if (got.data) text += got.data.toString();
        fds.push(...got.fds);
      }
      if (text.endsWith('five')) resolve();
    });
  });
  closeSync(fd);
  tt.equal(text, 'one two three with-fd four five', 'the bytes, in order');
  tt.equal(fds.length, 1, 'the fd arrived once');
  tt.equal(readFileSync(`/proc/self/fd/${fds[0]}`, 'utf8'), 'the passed file\n', 'and is the file that was passed');
  closeSync(fds[0]!);
  for (const w of ['one', 'two', 'three', 'with-fd', 'four', 'five']) {
    tt.ok(called.includes(`cb ${w}`) && called.includes(`done ${w}`), `both callbacks of "${w}"`);
  }
  sender.destroy();
  receiver.destroy();
});
