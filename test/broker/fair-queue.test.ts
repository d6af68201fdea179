import t from 'tap';
import { FairQueue, fairChunks } from '../../src/broker/fair-queue.js';

/** A piece of work the test finishes by hand, recording when it started. */
function manual(log: string[], name: string) {
  let finish!: () => void;
  const done = new Promise<void>((res) => (finish = res));
  return { work: async () => { log.push(name); await done; }, finish: () => finish() };
}
const settle = () => new Promise((res) => setImmediate(res));

t.test('a flood waits behind its own requests: slots go round-robin between users', async (tt) => {
  const q = new FairQueue(1);
  const log: string[] = [];
  const jobs: Record<string, ReturnType<typeof manual>> = {};
  const runs: Promise<void>[] = [];
  // The flooder (uid 1) queues ten, then two others queue two each.
  for (let k = 0; k < 10; k++) {
    jobs[`a${k}`] = manual(log, `a${k}`);
    runs.push(q.run(1, jobs[`a${k}`]!.work));
  }
  for (const [uid, who] of [[2, 'b'], [3, 'c']] as const) {
    for (let k = 0; k < 2; k++) {
      jobs[`${who}${k}`] = manual(log, `${who}${k}`);
      runs.push(q.run(uid, jobs[`${who}${k}`]!.work));
    }
  }
  await settle();
  tt.same(log, ['a0'], 'one slot: one runs');
  tt.equal(q.queued, 13);
  const order = ['a0'];
  while (order.length < 14) {
    jobs[order[order.length - 1]!]!.finish();
    await settle();
    order.push(log[log.length - 1]!);
  }
  jobs[order[13]!]!.finish();
  await Promise.all(runs);
  tt.same(order.slice(0, 7), ['a0', 'a1', 'b0', 'c0', 'a2', 'b1', 'c1'], 'each user in turn: the others wait for one of the flood, not ten');
  tt.same(order.slice(7), ['a3', 'a4', 'a5', 'a6', 'a7', 'a8', 'a9'], 'the flood has the queue once the others are served');
  tt.equal(q.queued, 0);
});

t.test('no more run at once than there are slots, and a failure gives its slot back', async (tt) => {
  const q = new FairQueue(3);
  let running = 0;
  let most = 0;
  const runs = Array.from({ length: 20 }, (_, k) =>
    q.run(k % 4, async () => {
      running++;
      most = Math.max(most, running);
      await new Promise((res) => setTimeout(res, 2));
      running--;
      if (k % 5 === 0) throw new Error(`job ${k} failed`);
      return k;
    }),
  );
  const results = await Promise.allSettled(runs);
  tt.equal(most, 3);
  tt.equal(results.filter((r) => r.status === 'rejected').length, 4);
  // Still usable: every slot came back.
  tt.same(await Promise.all([q.run(9, async () => 'x'), q.run(9, async () => 'y'), q.run(9, async () => 'z')]), ['x', 'y', 'z']);
});

t.test('a release is given back once, however often it is called', async (tt) => {
  const q = new FairQueue(1);
  const release = await q.acquire(1);
  release();
  release();
  const a = await q.acquire(2);
  let second = false;
  const b = q.acquire(3).then((r) => {
    second = true;
    return r;
  });
  await settle();
  tt.notOk(second, 'the slot is held by the second user, not given out twice');
  a();
  (await b)();
  tt.ok(second);
});

t.test('fairChunks: chunks of two uploads alternate, and no turn is held while a stream is silent', async (tt) => {
  const q = new FairQueue(1);
  const log: string[] = [];
  async function* stream(name: string, n: number, gapMs = 0) {
    for (let k = 0; k < n; k++) {
      if (gapMs) await new Promise((res) => setTimeout(res, gapMs));
      yield `${name}${k}`;
    }
  }
  const consume = async (uid: number, chunks: AsyncIterable<string>) => {
    for await (const c of fairChunks(q, uid, chunks)) {
      log.push(c);
      await settle();
    }
  };
  // A silent stream (one chunk every 30 ms) must not slow down the busy one.
  const t0 = Date.now();
  await Promise.all([consume(1, stream('a', 6)), consume(2, stream('b', 6)), consume(3, stream('slow', 2, 30))]);
  tt.same(log.filter((c) => !c.startsWith('slow')).slice(0, 4), ['a0', 'b0', 'a1', 'b1'], 'busy streams take turns');
  tt.ok(log.indexOf('a5') < log.indexOf('slow0'), 'the busy streams were done before the silent one said anything');
  tt.ok(Date.now() - t0 < 1000);
});
