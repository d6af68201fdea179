// Manifests built to exhaust the EROFS writer: the deepest paths allowed and
// one past, the most entries the policy allows and one past, many hardlinks
// to one file, every entry with its xattr budget full. Each is refused by a
// named limit or built with bounded memory, while another user is answered.
import t from 'tap';
import { createAdvWorld, errorName, type AdvWorld, type Reply } from './helpers/adv-world.js';
import { rssSampler, treeRss } from './helpers/broker-tree.js';

const MiB = 1024 * 1024;
const all = { users: ['*'], requireSubordinateIds: false };
let world: AdvWorld;
t.before(async () => {
  world = await createAdvWorld({
    users: { alice: {}, bob: {} },
    policy: {
      version: 1,
      methods: { AddImage: all, ListImages: all, RemoveImage: all },
      limits: { concurrentRequests: 8, requestsPerMinute: 100000 },
      images: { maxEntriesPerImage: 100_000, maxImagesPerUser: 64 },
    },
  });
});
t.teardown(() => world?.teardown());

const cases: { name: string; op: Record<string, unknown>; expect: 'built-or-refused' | { name: string; reason: RegExp } }[] = [
  { name: '1024 nested directories (the deepest path allowed)', op: { gen: { kind: 'depth', n: 1024 } }, expect: 'built-or-refused' },
  { name: '1025 nested directories', op: { gen: { kind: 'depth', n: 1025 } }, expect: { name: 'InvalidRequest', reason: /1024|deep|depth|components/ } },
  { name: '2047 nested directories (a 4094-byte path)', op: { gen: { kind: 'depth', n: 2047 } }, expect: { name: 'InvalidRequest', reason: /1024|deep|depth|components/ } },
  { name: 'the most entries the policy allows (100000)', op: { synthetic: 100_000 }, expect: 'built-or-refused' },
  { name: 'one entry more than the policy allows', op: { synthetic: 100_001 }, expect: { name: 'LimitExceeded', reason: /100001 entries; the policy allows at most 100000/ } },
  { name: '99000 hardlinks to one file', op: { gen: { kind: 'hardlinks', n: 99_000 } }, expect: 'built-or-refused' },
  { name: '1000 files with their xattr budget full (4 x 8000 bytes each, all distinct)', op: { gen: { kind: 'xattrs', n: 1000, count: 4, size: 8000 } }, expect: 'built-or-refused' },
  { name: '1000 files with one xattr past the budget', op: { gen: { kind: 'xattrs', n: 1000, count: 5, size: 8000 } }, expect: { name: 'InvalidRequest', reason: /xattr/ } },
];

for (const c of cases) {
  t.test(`AddImage of ${c.name}`, async (tt) => {
    const before = world.snapshot();
    const start = treeRss(world.broker.pid);
    const sampler = rssSampler(world.broker.pid);
    const add = world.probeAs(world.users.alice!, [{ op: 'addImage', ...c.op }], { timeoutMs: 120_000 });
    const bob = world.probeAs(world.users.bob!, [{ op: 'sleep', ms: 700 }, { op: 'info' }]);
    const [[r], [, info]] = await Promise.all([add, bob]);
    const peak = sampler.stop().peak;
    tt.comment(`${r!.ok ? 'built' : `${r!.name}: ${(r!.message ?? '').slice(0, 200)}`} in ${r!.ms} ms; RSS peak ${Math.round(peak / MiB)} MiB (start ${Math.round(start / MiB)})`);
    if (c.expect === 'built-or-refused') {
      tt.ok(r!.ok || /^org\.mountgate\.Error\.(LimitExceeded|InvalidRequest)$/.test(r!.name ?? ''), `built, or refused by a named limit (${r!.name ?? 'ok'})`);
    } else {
      tt.equal(r!.name, errorName(c.expect.name), `${c.expect.name} (${r!.name}: ${(r!.message ?? '').slice(0, 200)})`);
      tt.match(r!.message ?? '', c.expect.reason, 'the message names the limit');
    }
    tt.ok((r!.messageLength ?? (r!.message ?? '').length) <= 4096, 'the refusal (if any) is at most 4096 characters');
    tt.ok(peak < 1.5 * 1024 * MiB, `the broker tree's RSS stays under 1.5 GiB (${Math.round(peak / MiB)} MiB)`);
    tt.ok(info!.ok && (info!.ms ?? Infinity) < 1000, `bob's GetInfo meanwhile answered in ${info!.ms} ms`);
    if (r!.ok) await world.probeAs(world.users.alice!, [{ op: 'removeImage', id: r!.id }]);
    await world.nothingLeft(tt, before);
  });
}

t.test('two users building big images at once: both built, neither starves the other, others answered', async (tt) => {
  const before = world.snapshot();
  const sampler = rssSampler(world.broker.pid);
  const a = world.probeAs(world.users.alice!, [{ op: 'parallel', ops: [{ op: 'addImage', synthetic: 90_000 }, { op: 'addImage', synthetic: 90_001 }, { op: 'addImage', synthetic: 90_002 }] }], { timeoutMs: 120_000 });
  const b = world.probeAs(world.users.bob!, [{ op: 'sleep', ms: 300 }, { op: 'addImage', synthetic: 80_000 }, { op: 'info' }], { timeoutMs: 120_000 });
  const [[ra], rb] = await Promise.all([a, b]);
  const peak = sampler.stop().peak;
  const results = (ra!.results as Reply[]) ?? [];
  tt.ok(results.every((x) => x.ok), `alice's three images built (${results.map((x) => x.name ?? 'ok').join(', ')})`);
  tt.ok(rb[1]!.ok, `bob's image built (${rb[1]!.name ?? 'ok'}) in ${rb[1]!.ms} ms`);
  const slowestAlice = Math.max(...results.map((x) => x.ms ?? 0));
  tt.ok((rb[1]!.ms ?? Infinity) <= slowestAlice + 2000, `bob does not wait for all of alice's builds to finish first (bob ${rb[1]!.ms} ms, alice's last ${slowestAlice} ms)`);
  tt.ok(peak < 1.5 * 1024 * MiB, `RSS under 1.5 GiB (${Math.round(peak / MiB)} MiB)`);
  for (const x of results) if (x.ok) await world.probeAs(world.users.alice!, [{ op: 'removeImage', id: x.id }]);
  if (rb[1]!.ok) await world.probeAs(world.users.bob!, [{ op: 'removeImage', id: rb[1]!.id }]);
  await world.nothingLeft(tt, before);
});
