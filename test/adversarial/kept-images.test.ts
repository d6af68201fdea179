// Hidden images (AddImage of a manifest with keptFor) refused where they
// would reach past the caller: kept for another user's image, for an image
// the caller does not have, for a hidden image, for itself; a malformed id
// is refused by the schema; a hidden image cannot be removed by itself and is
// not listed, and the removal of the image it is kept for takes it along.
import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createAdvWorld, errorName, type AdvWorld } from './helpers/adv-world.js';

const all = { users: ['*'], requireSubordinateIds: false };
let world: AdvWorld;
t.before(async () => {
  world = await createAdvWorld({
    users: { alice: {}, bob: {} },
    policy: { version: 1, methods: { AddImage: all, PutObjects: all, ListImages: all, RemoveImage: all, MountImage: all }, limits: { concurrentRequests: 8, requestsPerMinute: 100000 } },
  });
});
t.teardown(() => world?.teardown());

const mtime = { sec: 1700000000, nsec: 0 };
const tree = (n: number, keptFor?: string) => ({ version: 1, ...(keptFor ? { keptFor } : {}), entries: [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime }, { path: `/f${n}`, type: 'fifo', mode: 0o644, uid: 0, gid: 0, mtime }] });
const imageDir = (id: string) => existsSync(join(world.broker.stateDir, 'images', id));

t.test('keptFor is honoured only for a listed image of the caller\'s own', async (t) => {
  const [alice, bob] = [world.users.alice!, world.users.bob!];
  const [a] = await world.probeAs(alice, [{ op: 'addImage', manifest: tree(1) }]);
  t.ok(a!.ok, `alice's image (${a!.message ?? ''})`);
  const aliceId = a!.id as string;

  const [theft] = await world.probeAs(bob, [{ op: 'addImage', manifest: tree(2, aliceId) }]);
  t.equal(theft!.name, errorName('NotFound'), 'bob cannot keep an image for alice\'s');
  t.match(theft!.message, /you have no image [0-9a-f]{64} to keep this one for/);
  const [bobs] = await world.probeAs(bob, [{ op: 'listImages' }]);
  t.same(bobs!.images, [], 'and nothing was registered for him');

  const [hidden] = await world.probeAs(alice, [{ op: 'addImage', manifest: tree(3, aliceId) }]);
  t.ok(hidden!.ok, `alice keeps an image for hers (${hidden!.message ?? ''})`);
  const hiddenId = hidden!.id as string;
  const [list] = await world.probeAs(alice, [{ op: 'listImages' }]);
  t.same((list!.images as { id: string }[]).map((i) => i.id), [aliceId], 'the hidden image is not listed');
  const [mounted] = await world.probeAs(alice, [{ op: 'mountImage', id: hiddenId }]);
  t.ok(mounted!.ok, `but it can be mounted, by its id (${mounted!.message ?? ''})`);

  const [chain] = await world.probeAs(alice, [{ op: 'addImage', manifest: tree(4, hiddenId) }]);
  t.equal(chain!.name, errorName('InvalidRequest'), 'nothing is kept for a hidden image');
  t.match(chain!.message, /is itself a hidden image kept for another/);
  const [self] = await world.probeAs(alice, [{ op: 'addImage', manifest: tree(1, aliceId) }]);
  t.equal(self!.name, errorName('InvalidRequest'), 'an image is not kept for itself');
  const [bad] = await world.probeAs(alice, [{ op: 'addImage', manifest: tree(5, '../../etc') }]);
  t.equal(bad!.name, errorName('InvalidRequest'), 'keptFor must be an image id');
  t.match(bad!.message, /keptFor/);

  const [alone] = await world.probeAs(alice, [{ op: 'removeImage', id: hiddenId }]);
  t.equal(alone!.name, errorName('NotFound'), 'a hidden image is not removed by itself');
  t.ok(imageDir(hiddenId), 'and it is still there');
  const [rm] = await world.probeAs(alice, [{ op: 'removeImage', id: aliceId }]);
  t.ok(rm!.ok, 'alice removes her image');
  t.notOk(imageDir(aliceId) || imageDir(hiddenId), 'the hidden image went with it');
});
