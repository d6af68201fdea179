// The progress of `image add` (src/cli/progress.ts), pure: the events'
// numbers (rate, estimate only with a total), the terminal line (a bar with a
// total, counts without, never wider than the terminal), the throttle (the
// first and last event of a phase always, at most two a second between with
// --json), and nothing at all when the output is neither a terminal nor --json.
import t from 'tap';
import { ImportProgress, progressEvent, progressLine, type ProgressSink } from '../../src/cli/progress.js';

const MiB = 1024 * 1024;

t.test('events: rate over the phase, an estimate only when the total is known', async (t) => {
  t.same(progressEvent('read', { entries: 10, bytes: 50 * MiB, totalBytes: 200 * MiB }, 5000), { event: 'read', entries: 10, bytes: 50 * MiB, totalBytes: 200 * MiB, rate: 10 * MiB, etaSeconds: 15, elapsedSeconds: 5 });
  t.same(progressEvent('read', { entries: 10, bytes: 50 * MiB }, 5000), { event: 'read', entries: 10, bytes: 50 * MiB, rate: 10 * MiB, elapsedSeconds: 5 }, 'no total, no estimate');
  t.same(progressEvent('upload', { objects: 3, totalObjects: 3, bytes: MiB, totalBytes: MiB }, 2000, true), { event: 'upload', objects: 3, totalObjects: 3, bytes: MiB, totalBytes: MiB, rate: MiB / 2, elapsedSeconds: 2, done: true }, 'the last one says done');
});

t.test('the terminal line: a bar with a total, counts without, cut to the width', async (t) => {
  const withTotal = progressLine(progressEvent('read', { entries: 1234, bytes: 50 * MiB, totalBytes: 200 * MiB }, 5000), 200);
  t.equal(withTotal, 'reading    [#####               ]  25%  1234 entries  50.0/200.0 MiB  10.0 MiB/s  eta 0:15');
  t.equal(progressLine(progressEvent('read', { entries: 1234, bytes: 50 * MiB }, 5000), 200), 'reading    1234 entries  50.0 MiB  10.0 MiB/s');
  t.equal(progressLine(progressEvent('upload', { objects: 5, totalObjects: 10, bytes: 3 * MiB, totalBytes: 6 * MiB }, 4000), 200), 'uploading  [##########          ]  50%  5/10 objects  3.0/6.0 MiB  0.8 MiB/s  eta 0:04');
  t.equal(progressLine(progressEvent('read', { entries: 1, bytes: 1, totalBytes: 2 }, 1000), 30).length, 30, 'never wider than the terminal');
  t.match(progressLine(progressEvent('read', { entries: 9, bytes: 9, totalBytes: 9 }, 3_725_000, true), 200), /100%.* in 1h02m$/, 'the last line says how long it took');
});

function sink(mode: ProgressSink['mode']) {
  let now = 0;
  const out: string[] = [];
  return { out, tick: (ms: number) => (now += ms), sink: { mode, write: (s: string) => void out.push(s), columns: () => 120, now: () => now } };
}

t.test('--json: the first and last event of each phase, at most two a second between', async (t) => {
  const s = sink('json');
  const p = new ImportProgress(s.sink);
  p.readTotal(1000);
  for (let k = 1; k <= 100; k++) {
    p.entry();
    p.readBytes(k * 10);
    s.tick(20); // 100 entries over 2 s
  }
  p.upload({ objects: 0, totalObjects: 2, bytes: 0, totalBytes: 20 });
  s.tick(10);
  p.upload({ objects: 1, totalObjects: 2, bytes: 10, totalBytes: 20 });
  p.upload({ objects: 2, totalObjects: 2, bytes: 20, totalBytes: 20 });
  p.done();
  const events = s.out.map((l) => JSON.parse(l));
  const reads = events.filter((e) => e.event === 'read');
  t.ok(reads.length >= 4 && reads.length <= 6, `${reads.length} read events for 2 s (throttled)`);
  t.same(reads[0], { event: 'read', entries: 1, bytes: 0, totalBytes: 1000, rate: 0, elapsedSeconds: 0 }, 'the first at once');
  t.match(reads.at(-1), { entries: 100, bytes: 1000, totalBytes: 1000, done: true }, 'the last says done, with the totals');
  const uploads = events.filter((e) => e.event === 'upload');
  t.same(uploads.map((e) => [e.objects, e.done ?? false]), [[0, false], [2, true]], 'upload: the first and the last (done), the one between throttled');
  t.ok(s.out.every((l) => l.endsWith('\n')), 'one event a line');
});

t.test('a terminal: the line rewritten in place, ended once per phase', async (t) => {
  const s = sink('tty');
  const p = new ImportProgress(s.sink);
  p.readAt(5, 100);
  s.tick(200);
  p.readAt(6, 200);
  p.done();
  t.match(s.out[0], /^\rreading    5 entries  0\.0 MiB/, 'the first update at once');
  t.match(s.out[1], /^\rreading    6 entries/, 'the next one 200 ms later');
  t.ok(s.out.slice(0, -1).every((l) => l.startsWith('\r') && l.endsWith('\x1b[K')), 'each update rewrites the line');
  t.equal(s.out.at(-1), '\n', 'and the phase ends it');
});

t.test('neither a terminal nor --json: nothing', async (t) => {
  const s = sink('quiet');
  const p = new ImportProgress(s.sink);
  t.equal(p.active, false, 'no total is worth computing');
  p.readTotal(10);
  p.entry();
  p.upload({ objects: 1, totalObjects: 1, bytes: 1, totalBytes: 1 });
  p.done();
  t.same(s.out, []);
});
