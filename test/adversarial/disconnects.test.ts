// Callers that disconnect mid-request: an AddImage with a big manifest, a
// PutObjects stream cut in the middle of an object, BindIdmapped calls whose
// mount fds have nobody to go to. Nothing is left: store/tmp empty, no partial
// object, the broker tree's fds back, others served.
import t from 'tap';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { FsVerityHasher } from '../../src/verity/fsverity.js';
import { createAdvWorld, type AdvWorld } from './helpers/adv-world.js';

const all = { users: ['*'], requireSubordinateIds: false };
let world: AdvWorld;
t.before(async () => {
  world = await createAdvWorld({
    users: { alice: {}, bob: {} },
    policy: {
      version: 1,
      methods: { BindIdmapped: { users: ['*'] }, Explain: all, AddImage: all, PutObjects: all, ListImages: all, RemoveImage: all },
      limits: { concurrentRequests: 8, requestsPerMinute: 100000 },
    },
  });
  await world.probeAs(world.users.alice!, [{ op: 'bind', source: { kind: 'dir', path: world.dirs.alice } }]);
});
t.teardown(() => world?.teardown());

const tmpFiles = () => {
  const dir = join(world.broker.stateDir, 'store', 'tmp');
  return existsSync(dir) ? readdirSync(dir) : [];
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const digestOf = (b: Buffer) => new FsVerityHasher().update(b).digest().toString('hex');

/** Waits until the broker has nothing in flight: fds back and store/tmp empty. */
async function quiet(tt: Tap.Test, before: ReturnType<AdvWorld['snapshot']>) {
  for (let k = 0; k < 100 && tmpFiles().length > 0; k++) await sleep(100);
  tt.same(tmpFiles(), [], 'store/tmp is empty');
  // An identified caller's AddImage may still register its image: the state may change, but only by whole images.
  await world.nothingLeft(tt, before, { stateMayChange: true, fdTimeoutMs: 15_000 });
  await world.served(tt, world.users.bob!);
}

t.test('AddImage with a big manifest, and the caller leaves at once', async (tt) => {
  const before = world.snapshot();
  const [r] = await world.probeAs(world.users.alice!, [{ op: 'leave', member: 'AddImage', synthetic: 150_000, afterMs: 0 }]);
  tt.ok(r!.left);
  await sleep(500);
  await quiet(tt, before);
});

t.test('AddImage with a big manifest, the caller leaves while it is built', async (tt) => {
  const before = world.snapshot();
  const [r] = await world.probeAs(world.users.alice!, [{ op: 'leave', member: 'AddImage', synthetic: 150_000, afterMs: 300 }]);
  tt.ok(r!.left);
  await quiet(tt, before);
});

t.test('PutObjects: the uploader dies in the middle of an object', async (tt) => {
  const before = world.snapshot();
  const big = Buffer.alloc(2 * 1024 * 1024, 'q');
  const digest = digestOf(big);
  const [added] = await world.probeAs(world.users.alice!, [{ op: 'addImage', manifest: { version: 1, entries: [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: { sec: 1, nsec: 0 } }, { path: '/big', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: { sec: 1, nsec: 0 }, size: big.length, digest }] } }]);
  tt.ok(added!.ok, `image added (${added!.message ?? ''})`);
  const mid = world.snapshot();
  const r = await world.probeAs(world.users.alice!, [{ op: 'putObjects', records: [{ digest, repeat: ['q', big.length] }], partial: 512 * 1024, holdMs: 800, leave: true }]).catch((e: Error) => e);
  tt.ok(!(r instanceof Error), 'the uploader left mid-object');
  await quiet(tt, mid);
  const [list] = await world.probeAs(world.users.alice!, [{ op: 'listImages' }]);
  tt.equal((list!.images as { id: string; missing: number }[]).find((i) => i.id === added!.id)?.missing, 1, 'the object is still missing: nothing partial was stored');
  await world.probeAs(world.users.alice!, [{ op: 'removeImage', id: added!.id }]);
  await world.nothingLeft(tt, before);
});

t.test('PutObjects over a stream socket: the uploader dies in the middle of an object', async (tt) => {
  const big = Buffer.alloc(1024 * 1024, 's');
  const digest = digestOf(big);
  const [added] = await world.probeAs(world.users.alice!, [{ op: 'addImage', manifest: { version: 1, entries: [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: { sec: 1, nsec: 0 } }, { path: '/s', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: { sec: 1, nsec: 0 }, size: big.length, digest }] } }]);
  const mid = world.snapshot();
  await world.probeAs(world.users.alice!, [{ op: 'putObjects', stream: 'socket', records: [{ digest, repeat: ['s', big.length] }], partial: 300 * 1024, holdMs: 800, leave: true }]).catch(() => undefined);
  await quiet(tt, mid);
  await world.probeAs(world.users.alice!, [{ op: 'removeImage', id: added!.id }]);
});

t.test('BindIdmapped calls whose caller is gone before the mount fds come back', async (tt) => {
  const before = world.snapshot();
  const [r] = await world.probeAs(world.users.alice!, [{ op: 'leave', member: 'BindIdmapped', count: 6, afterMs: 0, source: { kind: 'dir', path: world.dirs.alice } }]);
  tt.ok(r!.left);
  await sleep(500);
  await world.nothingLeft(tt, before, { fdTimeoutMs: 10_000 });
  await world.served(tt, world.users.bob!);
});
