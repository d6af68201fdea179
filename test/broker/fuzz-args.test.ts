// Property-based fuzzing of the broker's method arguments, through the real
// bus, as an unprivileged user: random and mutated request texts, image ids
// and explain requests for every method with string arguments, and random
// bind requests with a real directory fd. Every answer must be a success or
// a refusal by name (never Internal), the broker logs no error, it keeps its
// fd count and keeps serving another user. Fixed seed in the suite; a longer
// run: MOUNTGATE_FUZZ_RUNS=5000 MOUNTGATE_FUZZ_SEED=N bash test/run.sh test/broker/fuzz-args.test.ts
import t from 'tap';
import fc from 'fast-check';
import { join } from 'node:path';
import { createWorld, type World } from '../helpers/world.js';
import { runAs } from '../helpers/run-as.js';
import { pkgRoot } from '../helpers/paths.js';

const runs = Number(process.env.MOUNTGATE_FUZZ_RUNS ?? 300);
const seed = Number(process.env.MOUNTGATE_FUZZ_SEED ?? 20261201);
const probe = join(pkgRoot, 'test', 'helpers', 'probe-client.mjs');

let world: World;
t.before(async () => {
  world = await createWorld({
    users: { alice: {}, bob: {} },
    policy: {
      version: 1,
      methods: Object.fromEntries(['BindIdmapped', 'Explain', 'AddImage', 'PutObjects', 'MountImage', 'ListImages', 'RemoveImage'].map((m) => [m, { users: ['*'] }])),
      limits: { concurrentRequests: 8, requestsPerMinute: 1_000_000 },
    },
  });
});
t.teardown(() => world?.teardown());

// D-Bus strings cannot hold NUL (the client library refuses to send one): everything else goes.
const noNul = (s: string) => s.replaceAll('\0', '');
const text = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.json({ maxDepth: 4 }),
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
  // Near-valid requests: the right fields with hostile values.
  fc.record(
    {
      uidMap: fc.array(fc.record({ from: fc.oneof(fc.integer(), fc.double(), fc.constant(4294967295)), to: fc.integer(), count: fc.oneof(fc.nat(), fc.integer()) }), { maxLength: 4 }),
      gidMap: fc.array(fc.record({ from: fc.nat(), to: fc.nat(), count: fc.nat() }), { maxLength: 3 }),
      readOnly: fc.oneof(fc.boolean(), fc.string()),
      noexec: fc.boolean(),
      owner: fc.integer(),
    },
    { requiredKeys: [] },
  ).map((r) => JSON.stringify(r)),
).map(noNul);
const imageId = fc.oneof(fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: 64, maxLength: 64 }), fc.string({ unit: 'binary', maxLength: 80 }), fc.constant('0'.repeat(64)), fc.constant('../../etc/passwd')).map(noNul);
const method = fc.oneof(fc.constantFrom('GetInfo', 'BindIdmapped', 'Explain', 'AddImage', 'PutObjects', 'MountImage', 'ListImages', 'RemoveImage'), fc.string({ maxLength: 20 })).map(noNul);

const op = (dir: string) =>
  fc.oneof(
    fc.record({ op: fc.constant('raw'), member: fc.constant('MountImage'), signature: fc.constant('ss'), body: fc.tuple(imageId, text) }),
    fc.record({ op: fc.constant('raw'), member: fc.constant('RemoveImage'), signature: fc.constant('s'), body: fc.tuple(imageId) }),
    fc.record({ op: fc.constant('raw'), member: fc.constant('Explain'), signature: fc.constant('ssah'), body: fc.tuple(method, fc.oneof(text, fc.record({ imageId, request: fc.jsonValue({ maxDepth: 2 }) }).map((v) => JSON.stringify(v))), fc.constant([])) }),
    fc.record({ op: fc.constant('bind'), source: fc.constant({ kind: 'dir', path: dir }), request: text }),
  );

t.test(`${runs} random argument sets: every answer is a success or a named refusal, and the broker stays whole`, async (tt) => {
  const ops = fc.sample(op(world.dirs.alice!), { seed, numRuns: runs });
  const before = world.broker.openFds();
  const r = await runAs(world.users.alice!, [process.execPath, probe, JSON.stringify(ops)], { busAddress: world.bus.address, timeoutMs: 240_000 });
  tt.equal(r.code, 0, `the probe client ran (stderr: ${r.stderr.slice(0, 500)})`);
  const results = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { ok: boolean; name?: string; message?: string });
  tt.equal(results.length, ops.length, 'every call was answered');
  const refused = new Set(['org.mountgate.Error.InvalidRequest', 'org.mountgate.Error.NotFound', 'org.mountgate.Error.PolicyDenied', 'org.mountgate.Error.NotOwner', 'org.mountgate.Error.LimitExceeded']);
  const odd = results.map((res, k) => ({ res, op: ops[k] })).filter(({ res }) => !res.ok && !refused.has(res.name ?? ''));
  tt.same(odd.slice(0, 3), [], 'no answer outside success and the named refusals (no Internal error, no bus error)');
  tt.ok(results.every((res) => res.ok || (res.message ?? '').length <= 4096), 'every refusal message is at most 4096 characters');
  tt.same(world.broker.audit.filter((l) => l.event === 'error').slice(0, 3), [], 'the broker logged no error');
  const info = await runAs(world.users.bob!, [process.execPath, probe, JSON.stringify([{ op: 'info' }])], { busAddress: world.bus.address });
  tt.match(info.stdout, /"ok":true/, 'another user is served afterwards');
  await new Promise((res) => setTimeout(res, 300));
  tt.equal(world.broker.openFds(), before, 'the broker holds as many fds as before');
});
