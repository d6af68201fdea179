// Finding 9: refusals the audit log never saw. A caller that sends calls and
// disconnects at once cannot be identified: each such call is audited as a
// PolicyDenied decision saying the broker could not tell who you are. A refused
// AddImage (device node; invalid manifest) is audited with its reason.
import t from 'tap';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createAdvWorld, errorName, type AdvWorld } from './helpers/adv-world.js';

let world: AdvWorld;
t.before(async () => {
  world = await createAdvWorld({
    users: { alice: {}, bob: {} },
    policy: {
      version: 1,
      methods: { BindIdmapped: { users: ['*'] }, AddImage: { users: ['*'], requireSubordinateIds: false }, ListImages: { users: ['*'], requireSubordinateIds: false }, Explain: { users: ['*'], requireSubordinateIds: false } },
      limits: { concurrentRequests: 8, requestsPerMinute: 100000 },
    },
  });
  await world.probeAs(world.users.alice!, [{ op: 'bind', source: { kind: 'dir', path: world.dirs.alice } }]);
});
t.teardown(() => world?.teardown());

const mtime = { sec: 1700000000, nsec: 0 };
const root = { path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime };
type Line = Record<string, unknown>;
const since = (n: number) => (pred: (l: Line) => boolean) => (l: Line) => world.broker.audit.indexOf(l) >= n && pred(l);

for (const member of ['GetInfo', 'BindIdmapped', 'AddImage']) {
  t.test(`a caller that sends ${member} calls and disconnects at once: audited as PolicyDenied, "who you are"`, async (tt) => {
    const before = world.snapshot();
    const seen = world.broker.audit.length;
    const source = member === 'BindIdmapped' ? { kind: 'dir', path: world.dirs.alice } : undefined;
    // The race (the caller gone before the broker asks the bus who it is) is the
    // broker's to lose: a fast broker may identify every call in time. A few
    // attempts make it happen; each attempt's calls are audited either way.
    const unidentified = since(seen)((l) => l.event === 'decision' && l.method === member && l.allowed === false && l.reason === 'PolicyDenied' && /who you are/.test(String(l.message)));
    let line: Line | undefined;
    for (let attempt = 1; attempt <= 5 && !line; attempt++) {
      const [left] = await world.probeAs(world.users.alice!, [{ op: 'leave', member, count: 20, hogBytes: 30_000_000, hogs: 2, source, manifest: { version: 1, entries: [root] } }]);
      tt.ok(left!.left, `the caller sent its calls and left (attempt ${attempt})`);
      line = await world.broker.waitFor(unidentified, 3000).catch(() => undefined);
    }
    tt.ok(line, `a decision line {method: ${member}, allowed: false, reason: PolicyDenied} whose message says the broker could not tell who you are`);
    tt.comment(`audit since: ${JSON.stringify(world.broker.audit.slice(seen).filter((l) => l.event !== 'decision' || l.allowed === false).slice(0, 3))}`);
    // A call identified before its caller left may still build its image (a legitimate request); nothing half-done stays.
    await world.nothingLeft(tt, before, { stateMayChange: member === 'AddImage' });
    const tmp = join(world.broker.stateDir, 'store', 'tmp');
    tt.same(existsSync(tmp) ? readdirSync(tmp) : [], [], 'store/tmp is empty');
    await world.served(tt, world.users.bob!);
  });
}

const refusedManifests = [
  { name: 'a device node', manifest: { version: 1, entries: [root, { path: '/sda', type: 'blockdev', mode: 0o666, uid: 0, gid: 0, mtime, rdev: 2048 }] }, reason: 'PolicyDenied', message: /device/ },
  { name: 'a manifest that is not JSON', manifest: '{"version": 1, "entries": [', reason: 'InvalidRequest', message: /JSON/ },
  { name: 'a manifest the schema refuses', manifest: { version: 1, entries: [root, { ...root, path: '/..' }] }, reason: 'InvalidRequest', message: /\.\./ },
];

for (const m of refusedManifests) {
  t.test(`AddImage refused for ${m.name}: audited with its reason`, async (tt) => {
    const before = world.snapshot();
    const seen = world.broker.audit.length;
    const [r] = await world.probeAs(world.users.alice!, [{ op: 'addImage', manifest: m.manifest }]);
    tt.equal(r!.name, errorName(m.reason), `refused: ${m.reason} (${r!.name}: ${r!.message})`);
    const line = await world.broker.waitFor(since(seen)((l) => l.event === 'decision' && l.method === 'AddImage'), 5000).catch(() => undefined);
    tt.ok(line, 'a decision line for AddImage');
    tt.equal(line?.allowed, false, 'allowed: false');
    tt.equal(line?.reason, m.reason, `reason: ${m.reason} (${String(line?.reason)}: ${String(line?.message).slice(0, 200)})`);
    tt.match(String(line?.message ?? ''), m.message, 'with the message');
    tt.equal((line?.caller as { uid?: number } | undefined)?.uid, world.users.alice!.uid, 'naming the caller');
    await world.nothingLeft(tt, before);
    await world.served(tt, world.users.bob!);
  });
}
