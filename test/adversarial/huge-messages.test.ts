// Finding 7: a refusal that echoes what the caller sent can be too big for the
// bus, and the broker exited. Every refusal's message is at most 4096
// characters, the broker stays up, and others are served: a 100 MB unknown
// key in a manifest, a ~30 MB request_json (just under the private bus's own
// 32 MiB message limit, dbus-daemon's default) to BindIdmapped, Explain and
// MountImage, and a manifest with a million bad entries.
import t from 'tap';
import { createAdvWorld, errorName, type AdvWorld, type Reply } from './helpers/adv-world.js';

let world: AdvWorld;
t.before(async () => {
  world = await createAdvWorld({
    users: { alice: {}, bob: {} },
    policy: {
      version: 1,
      methods: { BindIdmapped: { users: ['*'] }, Explain: { users: ['*'], requireSubordinateIds: false }, AddImage: { users: ['*'], requireSubordinateIds: false }, MountImage: { users: ['*'], requireSubordinateIds: false }, ListImages: { users: ['*'], requireSubordinateIds: false }, RemoveImage: { users: ['*'], requireSubordinateIds: false } },
      limits: { concurrentRequests: 8, requestsPerMinute: 100000 },
    },
  });
  await world.probeAs(world.users.alice!, [{ op: 'bind', source: { kind: 'dir', path: world.dirs.alice } }]);
});
t.teardown(() => world?.teardown());

// dbus-daemon's default max_message_size is 32 MiB; the string leaves room for the rest of the message.
const nearBusLimit = 30_000_000;

async function hostile(tt: Tap.Test, what: string, op: Record<string, unknown>, names = ['InvalidRequest']) {
  await world.restartIfDead(tt);
  const before = world.snapshot();
  const pid = world.broker.pid;
  // Bob asks while the hostile call is worked on.
  const during = new Promise((res) => setTimeout(res, 1500)).then(() => world.served(tt, world.users.bob!, 'bob, while the call is worked on'));
  const [r] = await world.probeAs(world.users.alice!, [op], { timeoutMs: Number(process.env.ADV_ANSWER_MS ?? 30_000) }).catch((err: Error) => [{ ok: false, name: 'no answer', message: `within ${Number(process.env.ADV_ANSWER_MS ?? 30_000) / 1000} s: ${err.message.slice(0, 300)}` } as Reply]);
  await during;
  if (r!.name === 'no answer') {
    // A broker still chewing on the call would spoil every later case: a fresh one takes over.
    tt.fail(`${what}: answered (${r!.message})`);
    await world.killBroker();
    await world.restartIfDead(tt);
    return;
  }
  const verdict = r!.verdict as { allowed: boolean; error?: { name: string; message: string } } | undefined;
  const name = verdict ? verdict.error?.name : r!.name;
  const message = (verdict ? verdict.error?.message : r!.message) ?? '';
  const length = verdict ? (r!.body?.[0] as string | undefined)?.length ?? 0 : r!.messageLength ?? message.length;
  tt.ok(names.map(errorName).includes(name ?? ''), `${what}: ${names.join(' or ')} (${name}: ${message.slice(0, 200)})`);
  tt.ok(length <= 4096, `${what}: the refusal is at most 4096 characters (${length})`);
  tt.equal(world.broker.pid, pid, 'the same broker process');
  await world.nothingLeft(tt, before);
  await world.served(tt, world.users.bob!);
}

t.test('AddImage: a manifest with a 100 MB string as an unknown key', (tt) => hostile(tt, 'AddImage', { op: 'addImage', hugeKey: 100_000_000 }));
t.test('AddImage: a manifest with a million bad entries (the error list is capped)', (tt) => hostile(tt, 'AddImage', { op: 'addImage', badEntries: 1_000_000 }));
t.test('BindIdmapped: a ~30 MB request_json', (tt) => hostile(tt, 'BindIdmapped', { op: 'bind', source: { kind: 'dir', path: world.dirs.alice }, hugeRequest: nearBusLimit }));
t.test('Explain(BindIdmapped): a ~30 MB request_json', (tt) => hostile(tt, 'Explain', { op: 'explain', method: 'BindIdmapped', source: { kind: 'dir', path: world.dirs.alice }, hugeRequest: nearBusLimit }));
t.test('Explain: a ~30 MB method name', (tt) => hostile(tt, 'Explain', { op: 'raw', member: 'Explain', signature: 'ssah', body: ['', '{}', []], huge: { index: 0, char: 'M', count: nearBusLimit } }));
t.test('MountImage: a ~30 MB request_json', (tt) => hostile(tt, 'MountImage', { op: 'raw', member: 'MountImage', signature: 'ss', body: ['0'.repeat(64), ''], huge: { index: 1, char: 'A', count: nearBusLimit, prefix: '{"junk":"', suffix: '"}' } }));
t.test('MountImage: a ~30 MB image id', (tt) => hostile(tt, 'MountImage', { op: 'raw', member: 'MountImage', signature: 'ss', body: ['', '{}'], huge: { index: 0, char: 'f', count: nearBusLimit } }, ['InvalidRequest', 'NotFound']));

// An image whose list of missing objects no bus message could carry (250,000
// digests: 16 MB as hex strings, over the broker's 16 MiB reply cap): the list
// comes in a sealed memfd, every digest once, in byte order; the reply itself stays small.
t.test('AddImage: 250,000 missing objects come in a sealed memfd, whole and sorted', async (tt) => {
  await world.restartIfDead(tt);
  const before = world.snapshot();
  const pid = world.broker.pid;
  const during = new Promise((res) => setTimeout(res, 1500)).then(() => world.served(tt, world.users.bob!, 'bob, while the image is built'));
  const [r] = await world.probeAs(world.users.alice!, [{ op: 'addImage', gen: { kind: 'objects', n: 250_000 } }], { timeoutMs: 120_000 });
  await during;
  tt.ok(r!.ok, `AddImage answered (${r!.name ?? ''} ${String(r!.message ?? '').slice(0, 200)})`);
  tt.equal(r!.missingCount, 250_000, 'every object is missing');
  tt.equal(r!.listSealed, true, 'the list is a memfd sealed against writes, growth and shrinking');
  tt.equal(r!.missingIsEveryObjectSorted, true, 'the list is exactly the image objects, in byte order');
  tt.equal(world.broker.pid, pid, 'the same broker process');
  const [rm] = await world.probeAs(world.users.alice!, [{ op: 'removeImage', id: r!.id }]);
  tt.ok(rm!.ok, 'the image is removed again');
  await world.nothingLeft(tt, before);
  await world.served(tt, world.users.bob!);
});
