// IdlePool (src/broker/idle-pool.ts): helpers start on demand, are reused
// while calls keep coming, and are let go once idle; dead ones are never
// handed out again.
import t from 'tap';
import { IdlePool } from '../../src/broker/idle-pool.js';

class Fake {
  alive = true;
  killed = false;
  constructor(readonly n: number) {}
  kill() {
    this.alive = false;
    this.killed = true;
  }
}

function pool(idleMs: number) {
  const started: Fake[] = [];
  const p = new IdlePool(() => {
    const f = new Fake(started.length);
    started.push(f);
    return f;
  }, idleMs);
  return { p, started };
}
const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

t.test('nothing runs until a call needs a helper; one given back is reused', async (tt) => {
  const { p, started } = pool(10_000);
  tt.equal(started.length, 0, 'none started ahead of need');
  const a = p.take();
  tt.equal(started.length, 1, 'the first call starts one');
  p.give(a);
  tt.equal(p.idleCount, 1, 'given back, it waits idle');
  tt.equal(p.take(), a, 'the next call gets the same helper');
  tt.equal(started.length, 1, 'and starts none');
  const b = p.take();
  tt.not(b, a, 'a second call at once gets a second helper');
  p.give(a);
  p.give(b);
  tt.equal(p.take(), b, 'the one used last is taken first (the others can expire)');
  p.close();
  tt.ok(a.killed, 'close lets the idle ones go');
  p.give(b);
  tt.ok(b.killed, 'and one given back after close goes at once');
});

t.test('an idle helper is let go after idleMs; one in use never is', async (tt) => {
  const { p, started } = pool(50);
  const a = p.take();
  const busy = p.take();
  p.give(a);
  await sleep(150);
  tt.ok(a.killed, 'the idle helper was let go');
  tt.equal(p.idleCount, 0, 'and is no longer idle');
  tt.notOk(busy.killed, 'the helper in use was not touched');
  const c = p.take();
  tt.equal(started.length, 3, 'the next call starts a new helper');
  tt.not(c, a, 'not the one let go');
  p.give(busy);
  p.give(c);
  p.close();
});

t.test('a helper that died is never handed out again', async (tt) => {
  const { p } = pool(10_000);
  const a = p.take();
  p.give(a);
  a.alive = false; // exited by itself while idle
  const b = p.take();
  tt.not(b, a, 'a dead idle helper is skipped');
  b.alive = false; // killed at its deadline while in use
  p.give(b);
  tt.equal(p.idleCount, 0, 'a dead helper given back is dropped');
  p.close();
});

t.test('warm: one helper started ahead of an expected call, taken by it; never a second while one is idle; let go when idle; none once closed', async (tt) => {
  const { p, started } = pool(50);
  p.warm();
  tt.equal(started.length, 1, 'warm starts one');
  tt.equal(p.idleCount, 1, 'which waits idle');
  p.warm();
  p.warm();
  tt.equal(started.length, 1, 'asked again while it waits: none more');
  const a = p.take();
  tt.equal(a, started[0], 'the call takes the warm helper');
  tt.equal(started.length, 1, 'and starts none');
  p.give(a);
  p.warm();
  tt.equal(started.length, 1, 'one given back counts as warm');
  await sleep(120);
  tt.ok(a.killed, 'a warm helper no call took is let go like any idle one');
  p.close();
  p.warm();
  tt.equal(started.length, 1, 'a closed pool starts none');
});
