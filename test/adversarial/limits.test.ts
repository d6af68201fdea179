// Finding 3: limits checked after the work. Per-user concurrentRequests is
// checked before any byte is read (the excess fails at once with
// LimitExceeded), a manifest bigger than images.maxManifestBytes (default
// 256 MiB) is refused by its size alone, another user's GetInfo stays under
// 1 s, and the broker tree's RSS stays under 1.5 GiB and comes back.
import t from 'tap';
import { createAdvWorld, errorName, type AdvWorld, type Reply } from './helpers/adv-world.js';
import { rssSampler, treeRss } from './helpers/broker-tree.js';

const MiB = 1024 * 1024;
let world: AdvWorld;
t.before(async () => {
  world = await createAdvWorld({
    users: { alice: {}, bob: {} },
    policy: {
      version: 1,
      methods: { AddImage: { users: ['*'], requireSubordinateIds: false }, PutObjects: { users: ['*'], requireSubordinateIds: false }, ListImages: { users: ['*'], requireSubordinateIds: false }, Explain: { users: ['*'], requireSubordinateIds: false } },
      limits: { concurrentRequests: 8, requestsPerMinute: 100000 },
    },
  });
});
t.teardown(() => world?.teardown());

/** A sparse sealed memfd of `size` bytes: a JSON-looking head and zeros (no memory behind them in the caller). */
const sparseManifest = (size: number) => ({ op: 'addImage', manifest: '{"version":1,"entries":[', fd: { kind: 'memfd-sealed', size } });

async function settle(start: number): Promise<number> {
  let rss = treeRss(world.broker.pid);
  for (let k = 0; k < 100 && rss > start + 300 * MiB; k++) {
    await new Promise((r) => setTimeout(r, 100));
    rss = treeRss(world.broker.pid);
  }
  return rss;
}

t.test('30 concurrent AddImage calls with 64 MiB manifests from one user: the excess refused at once, memory bounded, others served', async (tt) => {
  const before = world.snapshot();
  const startRss = treeRss(world.broker.pid);
  const sampler = rssSampler(world.broker.pid);
  const flood = world.probeAs(world.users.alice!, [{ op: 'parallel', ops: Array.from({ length: 30 }, () => sparseManifest(64 * MiB)) }], { timeoutMs: 120_000 });
  // Bob asks while the flood is being worked on.
  const bob = world.probeAs(world.users.bob!, [{ op: 'sleep', ms: 1200 }, { op: 'info' }, { op: 'info' }], { timeoutMs: 60_000 });
  const [[r], bobReplies] = await Promise.all([flood, bob]);
  const peak = sampler.stop().peak;
  const results = (r!.results as Reply[]) ?? [];
  const limited = results.filter((x) => x.name === errorName('LimitExceeded'));
  tt.comment(`answers: ${JSON.stringify(results.map((x) => `${x.name ?? 'ok'} ${x.ms}ms`))}`);
  tt.ok(limited.length >= 22, `at least 22 of 30 refused with LimitExceeded (${limited.length})`);
  tt.ok(limited.every((x) => (x.ms ?? Infinity) < 1000), `every LimitExceeded came at once (slowest ${Math.max(...limited.map((x) => x.ms ?? 0))} ms)`);
  tt.ok(limited.every((x) => /concurrent|at once|in progress/.test(x.message ?? '')), 'the refusals name the concurrency limit');
  for (const b of bobReplies.slice(1)) tt.ok(b.ok && (b.ms ?? Infinity) < 1000, `bob's GetInfo during the flood answered in ${b.ms} ms`);
  tt.ok(peak < 1.5 * 1024 * MiB, `the broker tree's RSS peak stays under 1.5 GiB (${Math.round(peak / MiB)} MiB, start ${Math.round(startRss / MiB)} MiB)`);
  const after = await settle(startRss);
  tt.ok(after <= startRss + 300 * MiB, `RSS returns within 300 MiB of the start (${Math.round(after / MiB)} MiB)`);
  await world.nothingLeft(tt, before);
  await world.served(tt, world.users.bob!);
});

t.test('ten 300 MB sparse manifests at once: refused by their size before any byte is read', async (tt) => {
  const before = world.snapshot();
  const startRss = treeRss(world.broker.pid);
  const sampler = rssSampler(world.broker.pid, 50);
  const [r] = await world.probeAs(world.users.alice!, [{ op: 'parallel', ops: Array.from({ length: 10 }, () => sparseManifest(300_000_000)) }], { timeoutMs: 120_000 });
  const peak = sampler.stop().peak;
  const results = (r!.results as Reply[]) ?? [];
  tt.comment(`answers: ${JSON.stringify(results.map((x) => `${x.name ?? 'ok'} ${x.ms}ms ${(x.message ?? '').slice(0, 120)}`))}`);
  const bySize = results.filter((x) => /300000000 bytes/.test(x.message ?? '') && /256 MiB|268435456/.test(x.message ?? ''));
  tt.equal(results.filter((x) => x.ok).length, 0, 'none accepted');
  tt.ok(bySize.length >= 2, `refusals name the size and the limit (${bySize.length} of 10; the rest may meet the concurrency limit)`);
  tt.ok(results.every((x) => x.name === errorName('LimitExceeded') || x.name === errorName('InvalidRequest')), 'every refusal is LimitExceeded or InvalidRequest');
  tt.ok(results.every((x) => (x.ms ?? Infinity) < 1000), `every refusal came at once (slowest ${Math.max(...results.map((x) => x.ms ?? 0))} ms)`);
  tt.ok(peak < startRss + 100 * MiB, `no manifest was read: RSS peak ${Math.round(peak / MiB)} MiB, start ${Math.round(startRss / MiB)} MiB`);
  await settle(startRss);
  await world.nothingLeft(tt, before);
  await world.served(tt, world.users.bob!);
});

t.test("one user's calls in flight meet that user's limit, and nobody else's", async (tt) => {
  const before = world.snapshot();
  // Eight upload streams held open (each a call in flight), then a ninth call.
  const alice = world.probeAs(world.users.alice!, [{
    op: 'parallel',
    ops: [...Array.from({ length: 8 }, () => ({ op: 'putObjects', records: [], holdOpenMs: 4000 })), { op: 'listImages', delayMs: 1500 }, { op: 'addImage', delayMs: 1500, manifest: { version: 1, entries: [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: { sec: 1, nsec: 0 } }] } }],
  }], { timeoutMs: 60_000 });
  const bob = world.probeAs(world.users.bob!, [{ op: 'sleep', ms: 2000 }, { op: 'info' }, { op: 'listImages' }, { op: 'putObjects', records: [] }], { timeoutMs: 60_000 });
  const [[a], b] = await Promise.all([alice, bob]);
  const results = (a!.results as Reply[]) ?? [];
  const [list, add] = results.slice(8);
  tt.comment(`alice: ${JSON.stringify(results.map((x) => `${x.name ?? 'ok'} ${x.ms}ms`))}`);
  tt.equal(add?.name, errorName('LimitExceeded'), `alice's ninth call (AddImage) is refused: LimitExceeded (${add?.name}: ${add?.message})`);
  tt.ok((add?.ms ?? Infinity) < 1000, 'at once');
  tt.ok(list, `alice's ListImages answered (${list?.name ?? 'ok'})`);
  const [, info, bobList, bobPut] = b;
  tt.ok(info!.ok && (info!.ms ?? Infinity) < 1000, `bob's GetInfo answered in ${info!.ms} ms`);
  tt.ok(bobList!.ok, `bob's ListImages served (${bobList!.name ?? ''})`);
  tt.ok(bobPut!.ok, `bob's PutObjects served (${bobPut!.name ?? ''} ${bobPut!.message ?? ''})`);
  await world.nothingLeft(tt, before);
});

t.test("many connections of one user meet that user's limit, and nobody else's", async (tt) => {
  const before = world.snapshot();
  // 40 connections, each holding an upload stream open: the user's limit is 8 at once, whatever the connection.
  const alice = world.probeAs(world.users.alice!, [{ op: 'parallel', connections: true, ops: Array.from({ length: 40 }, () => ({ op: 'putObjects', records: [], holdOpenMs: 4000 })) }], { timeoutMs: 60_000 });
  const bob = world.probeAs(world.users.bob!, [{ op: 'sleep', ms: 2500 }, { op: 'info' }, { op: 'putObjects', records: [] }], { timeoutMs: 60_000 });
  const [[a], b] = await Promise.all([alice, bob]);
  const results = (a!.results as Reply[]) ?? [];
  const limited = results.filter((x) => x.name === errorName('LimitExceeded'));
  tt.ok(results.filter((x) => x.ok).length <= 8, `at most 8 of alice's 40 streams accepted (${results.filter((x) => x.ok).length})`);
  tt.ok(limited.length >= 32, `the rest refused with LimitExceeded (${limited.length})`);
  tt.ok(b[1]!.ok && (b[1]!.ms ?? Infinity) < 1000, `bob's GetInfo answered in ${b[1]!.ms} ms`);
  tt.ok(b[2]!.ok, `bob's own upload is served (${b[2]!.name ?? ''} ${b[2]!.message ?? ''})`);
  await world.nothingLeft(tt, before);
});
