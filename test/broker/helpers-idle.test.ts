// The broker's helper processes start on demand and go when idle
// (src/broker/idle-pool.ts): at rest the tree is the executor and the front
// only; a bind starts an fd prober and an AddImage a build helper, each let
// go helperIdleMs after its last use, and a build of a big manifest lets its
// helper go at once. Against the real broker, as an unprivileged user.
import t from 'tap';
import { helperIdleMs } from '../../src/broker/idle-pool.js';
import { createAdvWorld, type AdvWorld } from '../adversarial/helpers/adv-world.js';
import { processKind, treePids } from '../adversarial/helpers/broker-tree.js';

const all = { users: ['*'], requireSubordinateIds: false };
let world: AdvWorld;
t.before(async () => {
  world = await createAdvWorld({
    users: { alice: {} },
    policy: { version: 1, methods: { BindIdmapped: all, AddImage: all, RemoveImage: all }, limits: { concurrentRequests: 8, requestsPerMinute: 100_000 } },
  });
});
t.teardown(() => world?.teardown());

/** The kinds of process in the broker's tree, sorted (one entry per process). */
const kinds = () => treePids(world.broker.pid).map(processKind).sort();
/** Waits (up to timeoutMs) until the tree is the executor and the front only. */
async function atRest(timeoutMs: number): Promise<string[]> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const now = kinds();
    if (now.join() === 'executor,front' || Date.now() > end) return now;
    await new Promise((res) => setTimeout(res, 100));
  }
}

t.test('at rest: the executor and the front, no helper', async (tt) => {
  tt.strictSame(await atRest(helperIdleMs + 5000), ['executor', 'front']);
});

t.test('a bind starts an fd prober, which is let go once idle', async (tt) => {
  const op = { op: 'bind', source: { kind: 'dir', path: world.dirs.alice! }, request: {} };
  // The prober lives on after the call: the probe client reports the tree while it sleeps after the bind.
  const [r] = await world.probeAs(world.users.alice!, [op]);
  tt.ok(r!.ok, `the bind is answered (${r!.name ?? 'ok'} ${r!.message ?? ''})`);
  tt.ok(kinds().includes('prober'), `a prober runs right after (${kinds().join(', ')})`);
  const t0 = Date.now();
  tt.strictSame(await atRest(helperIdleMs + 5000), ['executor', 'front'], 'and is let go');
  tt.ok(Date.now() - t0 >= helperIdleMs - 1500, `not before it was idle about ${helperIdleMs} ms (gone after ${Date.now() - t0} ms)`);
});

t.test('an AddImage starts a build helper, let go once idle; a big one at once', async (tt) => {
  const [small] = await world.probeAs(world.users.alice!, [{ op: 'addImage', synthetic: 10 }]);
  tt.ok(small!.ok, `a small image is built (${small!.name ?? 'ok'})`);
  tt.ok(kinds().includes('build helper'), `its build helper lives on for the next build (${kinds().join(', ')})`);
  tt.strictSame(await atRest(helperIdleMs + 5000), ['executor', 'front'], 'and is let go once idle');
  // 200k entries: a manifest of about 22 MB, past the 16 MiB after which build-helpers.ts lets its helper go.
  const [big] = await world.probeAs(world.users.alice!, [{ op: 'addImage', synthetic: 200_000 }], { timeoutMs: 120_000 });
  tt.ok(big!.ok, `a big image is built (${big!.name ?? 'ok'})`);
  tt.strictSame(await atRest(2000), ['executor', 'front'], 'its build helper is gone within 2 s of the answer');
  for (const r of [small!, big!]) await world.probeAs(world.users.alice!, [{ op: 'removeImage', id: r.id }]);
});
