// Malformed bus messages and wrong types: every method called with the wrong
// signature (with and without fds in it), unknown members and interfaces on
// the broker's path, and Explain carrying the most fds one message may carry.
// Each is answered at once by name, the fds it carried are closed, nothing is
// stored or mounted, and another user is served.
import t from 'tap';
import { createAdvWorld, errorName, type AdvWorld, type Reply } from './helpers/adv-world.js';

const all = { users: ['*'], requireSubordinateIds: false };
let world: AdvWorld;
t.before(async () => {
  world = await createAdvWorld({
    users: { alice: {}, bob: {} },
    policy: {
      version: 1,
      methods: { BindIdmapped: { users: ['*'] }, Explain: all, AddImage: all, PutObjects: all, MountImage: all, ListImages: all, RemoveImage: all },
      limits: { concurrentRequests: 8, requestsPerMinute: 100000 },
    },
  });
  await world.probeAs(world.users.alice!, [{ op: 'bind', source: { kind: 'dir', path: world.dirs.alice } }]);
});
t.teardown(() => world?.teardown());

const wrongSignatures: { member: string; signature: string; body: (w: AdvWorld) => unknown[]; fds?: boolean }[] = [
  { member: 'GetInfo', signature: 's', body: () => ['surplus'] },
  { member: 'BindIdmapped', signature: 's', body: () => ['{}'] },
  { member: 'BindIdmapped', signature: 'ss', body: (w) => [w.dirs.alice, '{}'] },
  { member: 'BindIdmapped', signature: 'sh', body: () => ['{}', '@fd'], fds: true },
  { member: 'BindIdmapped', signature: 'hsh', body: () => ['@fd', '{}', '@fd'], fds: true },
  { member: 'BindIdmapped', signature: 'ah', body: () => [['@fd', '@fd', '@fd']], fds: true },
  { member: 'Explain', signature: 'ss', body: () => ['BindIdmapped', '{}'] },
  { member: 'Explain', signature: 'ssh', body: () => ['BindIdmapped', '{}', '@fd'], fds: true },
  { member: 'Explain', signature: 'sas', body: () => ['BindIdmapped', ['{}']] },
  { member: 'AddImage', signature: 's', body: () => ['{"version":1,"entries":[]}'] },
  { member: 'AddImage', signature: 'hh', body: () => ['@fd', '@fd'], fds: true },
  { member: 'PutObjects', signature: 'u', body: () => [3] },
  { member: 'PutObjects', signature: 'ay', body: () => [Buffer.alloc(1024)] },
  { member: 'MountImage', signature: 's', body: () => ['0'.repeat(64)] },
  { member: 'MountImage', signature: 'hs', body: () => ['@fd', '{}'], fds: true },
  { member: 'ListImages', signature: 'u', body: () => [1] },
  { member: 'RemoveImage', signature: 'u', body: () => [1] },
  { member: 'RemoveImage', signature: 'a{sv}', body: () => [{}] },
];

/** Replaces "@fd" in a body with real fds: the probe's raw op passes numbers as fds for 'h'. */
function withFds(body: unknown[]): { ops: unknown[]; body: unknown[] } {
  let n = 0;
  const map = (x: unknown): unknown => (x === '@fd' ? n++ : Array.isArray(x) ? x.map(map) : x);
  const mapped = body.map(map);
  // Open n fds first (kept), then refer to them by their numbers via 'kept' indices.
  const ops = Array.from({ length: n }, () => ({ op: 'open', source: { kind: 'dir', path: world.dirs.alice } }));
  return { ops, body: mapped };
}

for (const w of wrongSignatures) {
  t.test(`${w.member} with signature "${w.signature}": InvalidRequest at once, fds closed`, async (tt) => {
    const before = world.snapshot();
    const { ops, body } = withFds(w.body(world));
    const [...replies] = await world.probeAs(world.users.alice!, [...ops, { op: 'raw', member: w.member, signature: w.signature, body, keptFds: w.fds === true }]);
    const r = replies[replies.length - 1]!;
    tt.equal(r.ok, false, 'refused');
    tt.equal(r.name, errorName('InvalidRequest'), `InvalidRequest (${r.name}: ${r.message})`);
    tt.match(r.message ?? '', /signature/, 'the message names the signature');
    tt.ok((r.ms ?? Infinity) < 1000, `at once (${r.ms} ms)`);
    await world.nothingLeft(tt, before);
    await world.served(tt, world.users.bob!);
  });
}

const strangers: { name: string; op: Record<string, unknown>; names: RegExp }[] = [
  { name: 'an unknown member of the broker interface', op: { member: 'Mount', signature: 's', body: ['x'] }, names: /^org\.freedesktop\.DBus\.Error\.(UnknownMethod|UnknownMember)$/ },
  { name: 'an unknown member carrying an fd', op: { member: 'Steal', signature: 'h', body: [0], keptFds: true }, names: /^org\.freedesktop\.DBus\.Error\.(UnknownMethod|UnknownMember)$/ },
  { name: 'an unknown interface on the broker path', op: { member: 'GetInfo', signature: '', body: [], dest: { interface: 'org.mountgate.Evil1' } }, names: /^org\.freedesktop\.DBus\.Error\.(UnknownMethod|UnknownInterface|AccessDenied)$/ },
  { name: 'a broker method on another object path', op: { member: 'GetInfo', signature: '', body: [], dest: { path: '/org/mountgate/Broker1/x' } }, names: /^org\.freedesktop\.DBus\.Error\.(UnknownMethod|UnknownObject|AccessDenied)$/ },
  { name: 'Properties.GetAll on the broker path', op: { member: 'GetAll', signature: 's', body: ['org.mountgate.Broker1'], dest: { interface: 'org.freedesktop.DBus.Properties' } }, names: /^org\.freedesktop\.DBus\.Error\.(UnknownMethod|UnknownInterface|AccessDenied|InvalidArgs)$/ },
];

for (const s of strangers) {
  t.test(`${s.name}: answered at once by name, nothing kept`, async (tt) => {
    const before = world.snapshot();
    const pre = s.op.keptFds ? [{ op: 'open', source: { kind: 'dir', path: world.dirs.alice } }] : [];
    const replies = await world.probeAs(world.users.alice!, [...pre, { op: 'raw', ...s.op }]);
    const r = replies[replies.length - 1]!;
    tt.equal(r.ok, false, 'refused');
    tt.match(r.name ?? '', s.names, `an error of the bus's own kinds (${r.name}: ${r.message})`);
    tt.ok((r.ms ?? Infinity) < 1000, `at once (${r.ms} ms)`);
    await world.nothingLeft(tt, before);
    await world.served(tt, world.users.bob!);
  });
}

// 16 is the most fds the bus daemon lets one message carry here; beyond it the daemon drops the caller.
for (const count of [16, 64]) {
  t.test(`Explain with ${count} fds in its ah: answered, every fd closed`, async (tt) => {
    const before = world.snapshot();
    const sources = Array.from({ length: count }, () => ({ kind: 'dir', path: world.dirs.alice }));
    const [r] = await world.probeAs(world.users.alice!, [{ op: 'explain', method: 'BindIdmapped', request: {}, sources }], { timeoutMs: 15_000 })
      .catch((err: Error) => [{ ok: false, ms: 0, name: 'org.freedesktop.DBus.Error.LimitsExceeded', message: `the bus dropped the caller: ${err.message.slice(0, 100)}` } as Reply]);
    tt.comment(`${r!.ok ? 'answered' : `${r!.name}: ${r!.message}`} in ${r!.ms} ms`);
    // The bus daemon may refuse a message with more fds than it allows per message: that is an answer too.
    tt.ok(r!.ok || /^org\.(mountgate\.Error\.(InvalidRequest|LimitExceeded)|freedesktop\.DBus\.Error\.LimitsExceeded)$/.test(r!.name ?? ''), `answered or refused by name (${r!.name ?? 'ok'})`);
    tt.ok((r!.ms ?? Infinity) < 2000, `at once (${r!.ms} ms)`);
    await world.nothingLeft(tt, before);
    await world.served(tt, world.users.bob!);
  });
}

t.test('a pipelined mix of all of the above from several connections: every call answered, nothing kept', async (tt) => {
  const before = world.snapshot();
  const ops: unknown[] = [];
  for (let k = 0; k < 10; k++) {
    for (const w of wrongSignatures.filter((x) => !x.fds)) ops.push({ op: 'raw', member: w.member, signature: w.signature, body: w.body(world) });
    for (const s of strangers.filter((x) => !x.op.keptFds)) ops.push({ op: 'raw', ...s.op });
  }
  const [r] = await world.probeAs(world.users.alice!, [{ op: 'parallel', connections: false, ops }]);
  const results = (r!.results as Reply[]) ?? [];
  tt.equal(results.length, ops.length, `all ${ops.length} answered`);
  tt.ok(results.every((x) => !x.ok), 'all refused');
  await world.nothingLeft(tt, before);
  await world.served(tt, world.users.bob!);
});
