// RemoveImage of a big image, as real users see it against a real broker:
// the image's rows go in the call (the quota is free at once), its object
// files are deleted after, off the event loop, so another user's calls are
// answered meanwhile; an object uploaded again right after the removal is
// never lost to the deletion of its old file; once drained the store holds
// exactly the objects the remaining images need.
import t from 'tap';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FsVerityHasher } from '../../src/verity/fsverity.js';
import { createWorld, type World } from '../helpers/world.js';
import { startBroker } from '../helpers/broker.js';
import { objectsClient, waitGone } from '../helpers/objects-client.js';
import { treePids } from '../adversarial/helpers/broker-tree.js';
import type { TestUser } from '../helpers/users.js';

const all = { users: ['*'] };
/** Objects of the big image: enough for many batches of deletions, few enough for a fast suite. */
const big = 3000;
let world: World;

t.before(async () => {
  world = await createWorld({
    users: { alice: {}, bob: {} },
    policy: {
      version: 1,
      methods: { AddImage: all, PutObjects: all, MountImage: all, ListImages: all, RemoveImage: all },
      limits: { concurrentRequests: 8, requestsPerMinute: 1_000_000 },
      // One image per user: a removal must free the quota at once.
      images: { maxImagesPerUser: 1 },
    },
  });
});
t.teardown(() => world?.teardown());

const as = (user: TestUser, ...args: string[]) => objectsClient(world, user, args, 120_000);

const digestOf = (buf: Buffer) => new FsVerityHasher().update(buf).digest().toString('hex');
const digestOfObject = (k: number) => digestOf(Buffer.from(`object ${k}\n`));
const objectsDir = () => join(world.broker.stateDir, 'store', 'objects');
function storeObjects(): string[] {
  return readdirSync(objectsDir()).flatMap((p) => readdirSync(join(objectsDir(), p)).map((r) => p + r));
}
const objectFile = (d: string) => join(objectsDir(), d.slice(0, 2), d.slice(2));


/** Index of the first audit line from `from` on that matches. */
const lineAt = (from: number, pred: (l: Record<string, unknown>) => boolean) => world.broker.audit.findIndex((l, i) => i >= from && pred(l));
const isStore = (l: Record<string, unknown>) => l.event === 'store';
const isRemoval = (uid: number) => (l: Record<string, unknown>) => l.event === 'result' && l.method === 'RemoveImage' && (l.caller as { uid: number }).uid === uid;

/** Waits for the report that the deletions queued from audit line `from` on are done. */
async function drained(from: number): Promise<Record<string, unknown>> {
  await world.broker.waitFor((l) => isStore(l) && world.broker.audit.indexOf(l) >= from, 60_000);
  return world.broker.audit[lineAt(from, isStore)]!;
}

t.test("another user's calls are answered while a big image's objects are deleted", async (tt) => {
  const alice = world.users.alice!;
  const bob = world.users.bob!;
  // bob's image shares alice's first 100 objects: those must stay.
  const bobs = await as(bob, 'add', '0', '100');
  const alices = await as(alice, 'add', '0', String(big));
  tt.equal(storeObjects().length, big, `the store holds alice's ${big} objects`);
  const stop = join(world.scratch, 'stop-listing');
  const listing = as(bob, 'list-until', stop);
  // bob's calls are under way before the removal.
  await world.broker.waitFor((l) => l.method === 'ListImages' && (l.caller as { uid: number }).uid === bob.uid);
  const from = world.broker.audit.length;
  await as(alice, 'remove', alices.imageId as string);
  const report = await drained(from);
  writeFileSync(stop, '');
  tt.ok(((await listing).calls as number) > 0, 'bob listed his images throughout');
  const removal = lineAt(from, isRemoval(alice.uid));
  const deletionsDone = world.broker.audit.indexOf(report);
  tt.ok(removal >= 0 && removal < deletionsDone, "alice's RemoveImage was answered before its deletions were done");
  const bobBetween = world.broker.audit.slice(removal + 1, deletionsDone).filter((l) => l.method === 'ListImages' && (l.caller as { uid: number }).uid === bob.uid);
  tt.ok(bobBetween.length > 0, `bob's ListImages were answered while alice's objects were being deleted (${bobBetween.length} of them)`);
  tt.equal(report.deleted, big - 100, 'every object only alice used was deleted');
  const wanted = Array.from({ length: 100 }, (_, k) => digestOfObject(k)).sort();
  tt.same(storeObjects().sort(), wanted, "the store holds exactly bob's objects: none left over, none needed missing");
  const last = world.broker.audit.length;
  await as(bob, 'remove', bobs.imageId as string);
  await drained(last);
  tt.same(storeObjects(), [], 'once both images are gone, so is every object');
});

t.test('an object uploaded again right after its removal is not lost to the deletion of its old file', async (tt) => {
  const alice = world.users.alice!;
  const bob = world.users.bob!;
  const alices = await as(alice, 'add', '0', String(big));
  // The rows go first, a thousand per turn, then the files, both in digest order: bob's
  // image is the objects deleted last, so his upload meets their old files still queued,
  // being unlinked or already gone (or, if he is quick, their rows still there).
  const sorted = Array.from({ length: big }, (_, k) => [digestOfObject(k), k] as const).sort(([a], [b]) => (a < b ? -1 : 1));
  const bobsObjects = sorted.slice(-300).map(([, k]) => k);
  const from = world.broker.audit.length;
  await as(alice, 'remove', alices.imageId as string);
  tt.comment(`${storeObjects().length} of ${big} object files were still on disk after the RemoveImage answer`);
  // alice's quota (one image) is free at once: she adds it again, before the deletions are done or not.
  const [alicesAgain, bobs] = await Promise.all([as(alice, 'add', '0', String(big)), as(bob, 'add-list', bobsObjects.join(','))]);
  for (const r of [alicesAgain, bobs]) tt.equal((r.put as { objects: number }).objects, r.missing, 'every missing object was uploaded and accepted');
  await drained(from);
  // Everything queued is done: what the images need is there, with the right bytes.
  const lost = Array.from({ length: big }, (_, k) => k).filter((k) => {
    const d = digestOfObject(k);
    return !existsSync(objectFile(d)) || digestOf(readFileSync(objectFile(d))) !== d;
  });
  tt.same(lost, [], 'no object the images need is missing or wrong');
  tt.equal(storeObjects().length, big, 'and nothing else is in the store');
  const mark = world.broker.audit.length;
  await as(alice, 'remove', alicesAgain.imageId as string);
  await as(bob, 'remove', bobs.imageId as string);
  await drained(mark);
  // Two drains may report (one per removal): wait until the store is empty of the rest too.
  if (storeObjects().length > 0) await drained(world.broker.audit.lastIndexOf(world.broker.audit.filter(isStore).at(-1)!) + 1);
  tt.same(storeObjects(), [], 'once every image is gone, so is every object');
});

t.test('a broker killed in the middle of the deletions leaves a store the next start puts right', async (tt) => {
  const alice = world.users.alice!;
  const alices = await as(alice, 'add', '0', String(big));
  const pids = treePids(world.broker.pid);
  await as(alice, 'remove', alices.imageId as string);
  world.broker.process.kill('SIGKILL');
  // The front notices its executor is gone and exits; the next broker needs its database lock.
  for (const pid of pids) await waitGone(pid);
  const left = storeObjects().length;
  tt.comment(`${left} of ${big} object files were left behind by the kill`);
  world.broker = await startBroker(world.bus.address, undefined, world.broker);
  // The reconciliation queued every file no row names; the front says when they are gone.
  if (left > 0) await world.broker.waitFor((l) => l.event === 'store', 60_000);
  tt.same(storeObjects(), [], 'no object file is left');
  const again = await as(alice, 'add', '0', '10');
  tt.equal(again.missing, 10, 'the store lacks the objects: they are uploaded again');
  tt.equal((again.put as { objects: number }).objects, 10, 'and accepted');
  const mark = world.broker.audit.length;
  await as(alice, 'remove', again.imageId as string);
  await drained(mark);
  tt.same(storeObjects(), [], 'and removed again');
});
