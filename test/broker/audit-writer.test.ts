import { closeSync, openSync, readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { AuditWriter } from '../../src/broker/audit.js';

const turn = () => new Promise((res) => setImmediate(res));

/** A write(2) stand-in that holds each write until the test lets it finish, writing `partial` bytes at most. */
function heldWrites(partial = Infinity) {
  const writes: { buffer: Buffer; done: (err: NodeJS.ErrnoException | null, n: number) => void }[] = [];
  const fn = (_fd: number, buffer: Buffer, done: (err: NodeJS.ErrnoException | null, n: number) => void) => {
    writes.push({ buffer: Buffer.from(buffer), done });
  };
  const finish = (k = 0, err: NodeJS.ErrnoException | null = null) => {
    const w = writes.splice(k, 1)[0]!;
    w.done(err, err ? 0 : Math.min(partial, w.buffer.length));
  };
  return { writes, fn, finish };
}

const events = (buffers: Buffer[]) =>
  Buffer.concat(buffers)
    .toString()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { event: string; message?: string });

t.test('the lines of one turn leave in one write, in order, and the next waits for it', async (tt) => {
  const w = heldWrites();
  const audit = new AuditWriter(1, w.fn);
  audit.sink({ event: 'decision', message: 'a' });
  audit.sink({ event: 'decision', message: 'b' });
  tt.equal(w.writes.length, 0, 'nothing is written inside the turn that made the lines');
  await turn();
  tt.equal(w.writes.length, 1, 'one write for the turn');
  audit.sink({ event: 'decision', message: 'c' });
  await turn();
  tt.equal(w.writes.length, 1, 'one write at a time');
  const first = w.writes[0]!.buffer;
  w.finish();
  tt.equal(w.writes.length, 1, 'the next batch leaves once the first is written');
  const second = w.writes[0]!.buffer;
  w.finish();
  tt.same(events([first, second]).map((e) => e.message), ['a', 'b', 'c']);
  await audit.drain(1000);
});

t.test('a short write is continued and EAGAIN is tried again: nothing is lost or reordered', async (tt) => {
  const w = heldWrites(7);
  let again = true;
  const fn = (fd: number, buffer: Buffer, done: (err: NodeJS.ErrnoException | null, n: number) => void) => {
    if (again) {
      again = false;
      done(Object.assign(new Error('EAGAIN'), { code: 'EAGAIN' }), 0);
      return;
    }
    w.fn(fd, buffer, done);
  };
  const audit = new AuditWriter(1, fn);
  for (let k = 0; k < 5; k++) audit.sink({ event: 'result', message: `line ${k}` });
  const out: Buffer[] = [];
  const drained = audit.drain(5000);
  for (let spins = 0; spins < 200 && (w.writes.length > 0 || out.length === 0 || !Buffer.concat(out).toString().endsWith('line 4"}\n')); spins++) {
    if (w.writes.length === 0) {
      await new Promise((res) => setTimeout(res, 5));
      continue;
    }
    out.push(w.writes[0]!.buffer.subarray(0, 7));
    w.finish();
  }
  await drained;
  tt.same(events(out).map((e) => e.message), ['line 0', 'line 1', 'line 2', 'line 3', 'line 4']);
});

t.test('a reader that stops reading costs lines, not memory, and is told how many', async (tt) => {
  const w = heldWrites();
  const audit = new AuditWriter(1, w.fn, 4096);
  audit.sink({ event: 'decision', message: 'first' });
  await turn();
  tt.equal(w.writes.length, 1, 'the first write hangs');
  // About 100 bytes each: 200 of them are far past 4096 bytes.
  for (let k = 0; k < 200; k++) audit.sink({ event: 'decision', message: `n${k}` });
  const held = w.writes[0]!.buffer;
  w.finish();
  const second = w.writes[0]!.buffer;
  tt.ok(second.length <= 4096, `the backlog stays under its bound (${second.length} bytes)`);
  w.finish();
  const third = w.writes[0]!.buffer;
  w.finish();
  const all = events([held, second, third]);
  const kept = all.filter((e) => e.event === 'decision').length - 1;
  const report = all.find((e) => e.event === 'error');
  tt.ok(kept > 0 && kept < 200, `some lines were kept (${kept})`);
  tt.match(report?.message, new RegExp(`^${200 - kept} audit record\\(s\\) were dropped`), 'the dropped lines are counted once there is room');
});

t.test('to a real file: every line arrives, and flushSync writes what is pending at once', async (tt) => {
  const dir = mkdtempSync(join(tmpdir(), 'mountgate-audit.'));
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'audit.log');
  const fd = openSync(path, 'a');
  const audit = new AuditWriter(fd);
  for (let k = 0; k < 1000; k++) audit.sink({ event: 'decision', message: `m${k}` });
  await audit.drain(5000);
  audit.sink({ event: 'stop' });
  audit.flushSync();
  closeSync(fd);
  const lines = readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { event: string; message?: string });
  tt.equal(lines.length, 1001);
  tt.same(lines.slice(0, 3).map((l) => l.message), ['m0', 'm1', 'm2']);
  tt.equal(lines[1000]!.event, 'stop');
});
