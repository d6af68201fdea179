// AddImage and PutObjects of a big image, as real users see them against a
// real broker: the image's object rows are registered a thousand per turn
// and its objects published a few dozen per turn, so another user's calls
// are answered while either call is in progress; an image being added is
// not listed until it is whole; a broker killed in the middle of a
// registration leaves, after the next start, the image whole or absent.
import t from 'tap';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, type World } from '../helpers/world.js';
import { startBroker } from '../helpers/broker.js';
import { objectsClient, waitGone } from '../helpers/objects-client.js';
import { treePids } from '../adversarial/helpers/broker-tree.js';
import type { TestUser } from '../helpers/users.js';

const all = { users: ['*'] };
/** Objects of the big image: many turns of rows and of publishing, few enough for a fast suite. */
const big = 5000;
let world: World;

t.before(async () => {
  world = await createWorld({
    users: { alice: {}, bob: {} },
    policy: {
      version: 1,
      methods: { AddImage: all, PutObjects: all, MountImage: all, ListImages: all, RemoveImage: all },
      limits: { concurrentRequests: 8, requestsPerMinute: 1_000_000 },
    },
  });
});
t.teardown(() => world?.teardown());

const as = (user: TestUser, ...args: string[]) => objectsClient(world, user, args, 180_000);


const by = (method: string, uid: number, event: string) => (l: Record<string, unknown>) => l.method === method && l.event === event && (l.caller as { uid: number } | undefined)?.uid === uid;
const lineAt = (from: number, pred: (l: Record<string, unknown>) => boolean) => world.broker.audit.findIndex((l, i) => i >= from && pred(l));

t.test("another user's calls are answered while a big image is registered and while its objects are published", async (tt) => {
  const alice = world.users.alice!;
  const bob = world.users.bob!;
  const stop = join(world.scratch, 'stop-listing');
  const listing = as(bob, 'list-until', stop);
  await world.broker.waitFor(by('ListImages', bob.uid, 'decision'));
  const from = world.broker.audit.length;
  const added = await as(alice, 'add', '0', String(big));
  writeFileSync(stop, '');
  tt.ok(((await listing).calls as number) > 0, 'bob listed his images throughout');
  tt.equal(added.missing, big, 'alice was asked for every object');
  tt.equal((added.put as { objects: number }).objects, big, 'and every one was accepted');
  for (const method of ['AddImage', 'PutObjects']) {
    const decided = lineAt(from, by(method, alice.uid, 'decision'));
    const answered = lineAt(from, by(method, alice.uid, 'result'));
    tt.ok(decided >= 0 && answered > decided, `alice's ${method} was decided, then answered`);
    // Each of bob's calls is decided, then answered, in one turn of the front: its decision line is its answer.
    const between = world.broker.audit.slice(decided + 1, answered).filter(by('ListImages', bob.uid, 'decision'));
    tt.ok(between.length > 0, `bob's ListImages were answered while alice's ${method} was in progress (${between.length} of them)`);
  }
  const mine = (await as(alice, 'list')).images as { id: string; objects: number; missing: number }[];
  tt.same(mine.map((i) => [i.id, i.objects, i.missing]), [[added.imageId, big, 0]], 'listed whole once added, nothing missing once uploaded');
  await as(alice, 'remove', added.imageId as string);
});

t.test('a broker killed in the middle of a registration leaves the image whole or absent after the next start', async (tt) => {
  const alice = world.users.alice!;
  const objects = 40_000;
  const pids = treePids(world.broker.pid);
  const from = world.broker.audit.length;
  const adding = as(alice, 'add', '0', String(objects)).catch((err: Error) => err);
  await world.broker.waitFor((l) => world.broker.audit.indexOf(l) >= from && by('AddImage', alice.uid, 'decision')(l), 120_000);
  world.broker.process.kill('SIGKILL');
  const answered = lineAt(from, by('AddImage', alice.uid, 'result')) >= 0;
  // The front notices its executor is gone and exits; the next broker needs its database lock.
  for (const pid of pids) await waitGone(pid);
  tt.ok((await adding) instanceof Error, "alice's call fails with the broker");
  world.broker = await startBroker(world.bus.address, undefined, world.broker);
  const listed = (await as(alice, 'list')).images as { id: string; objects: number; missing: number }[];
  if (answered) tt.comment('the kill came after the answer');
  tt.ok(listed.length === 0 || (listed.length === 1 && listed[0]!.objects === objects && listed[0]!.missing === objects), `after the restart alice has no image or the whole one (${listed.length})`);
  const dirs = readdirSync(join(world.broker.stateDir, 'images'));
  tt.same(dirs, listed.map((i) => i.id), 'no image directory is left that no image records');
  // Added again: whole, every object asked for and accepted.
  const again = await as(alice, 'add', '0', String(objects));
  tt.equal(again.missing, objects, 'added again, every object is asked for');
  tt.equal((again.put as { objects: number }).objects, objects, 'and accepted');
  await as(alice, 'remove', again.imageId as string);
});
