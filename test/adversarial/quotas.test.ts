// Finding 4: quotas bypassed. Removing an image while its PutObjects stream is
// open left the uploaded objects in the store, owned by nobody; an image's own
// metadata (its EROFS file) did not count toward maxBytesPerUser; concurrent
// AddImage calls of one user could get past maxImagesPerUser.
import t from 'tap';
import { applyPolicy as applyTo } from '../helpers/broker.js';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { FsVerityHasher } from '../../src/verity/fsverity.js';
import { createAdvWorld, errorName, type AdvWorld, type Reply } from './helpers/adv-world.js';

const all = { users: ['*'], requireSubordinateIds: false };
const policy = (images: Record<string, number>) => ({
  version: 1,
  methods: { AddImage: all, PutObjects: all, ListImages: all, RemoveImage: all, MountImage: all, Explain: all },
  limits: { concurrentRequests: 8, requestsPerMinute: 100000 },
  images: { maxImagesPerUser: 3, ...images },
});
let world: AdvWorld;
t.before(async () => {
  world = await createAdvWorld({ users: { alice: {}, bob: {}, carol: {} }, policy: policy({}) });
});

/** Applies a policy with SIGHUP and waits for the broker to say it did. */
const applyPolicy = (p: object) => applyTo(world.broker, p);
t.teardown(() => world?.teardown());

const mtime = { sec: 1700000000, nsec: 0 };
const root = { path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime };
const digestOf = (b: Buffer) => new FsVerityHasher().update(b).digest().toString('hex');
const fileEntry = (path: string, content: Buffer) => ({ path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size: content.length, digest: digestOf(content) });
const store = () => join(world.broker.stateDir, 'store');
function storeObjects(): string[] {
  const dir = join(store(), 'objects');
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((p) => readdirSync(join(dir, p)).map((r) => p + r));
}
const tmpFiles = () => (existsSync(join(store(), 'tmp')) ? readdirSync(join(store(), 'tmp')) : []);

t.test('removing an image while its upload stream is open leaves none of its objects in the store', async (tt) => {
  const alice = world.users.alice!;
  const small = Buffer.from('small object of alice\n'.repeat(100));
  const big = Buffer.alloc(40 * 1024, 'b');
  const before = world.snapshot();
  const [added] = await world.probeAs(alice, [{ op: 'addImage', manifest: { version: 1, entries: [root, fileEntry('/big', big), fileEntry('/small', small)] } }]);
  tt.ok(added!.ok, `image added (${added!.message ?? ''})`);
  const upload = world.probeAs(alice, [{
    op: 'putObjects',
    records: [{ digest: digestOf(small), content: small.toString() }, { digest: digestOf(big), content: big.toString() }],
    partial: 10 * 1024,
    holdMs: 3000,
  }]);
  for (let k = 0; k < 100 && tmpFiles().length === 0; k++) await new Promise((r) => setTimeout(r, 50));
  tt.ok(tmpFiles().length > 0 || storeObjects().length > 0, 'the upload is under way');
  const mark = world.broker.audit.length;
  const [removed] = await world.probeAs(alice, [{ op: 'removeImage', id: added!.id }]);
  tt.ok(removed!.ok, `the image is removed mid-upload (${removed!.name ?? ''} ${removed!.message ?? ''})`);
  const [put] = await upload;
  tt.comment(`the upload ended: ${JSON.stringify(put)}`);
  // An object published before the removal is deleted after its call, off the event loop: the front says when.
  if (storeObjects().includes(digestOf(small))) await world.broker.waitFor((l) => l.event === 'store' && world.broker.audit.indexOf(l) >= mark);
  for (let k = 0; k < 30 && tmpFiles().length > 0; k++) await new Promise((r) => setTimeout(r, 100));
  tt.notOk(storeObjects().includes(digestOf(small)), 'the object uploaded before the removal is not in the store');
  tt.notOk(storeObjects().includes(digestOf(big)), 'the object uploaded across the removal is not in the store');
  tt.same(tmpFiles(), [], 'nothing in store/tmp');
  const [list] = await world.probeAs(alice, [{ op: 'listImages' }]);
  tt.same(list!.images, [], 'alice has no image');
  await world.nothingLeft(tt, before, { stateMayChange: true });
  await world.served(tt, world.users.bob!);
});

t.test("ListImages' bytes include the image's own metadata (its EROFS file)", async (tt) => {
  const bob = world.users.bob!;
  const content = Buffer.from('ten bytes\n');
  const [added, put, list] = await world.probeAs(bob, [
    { op: 'addImage', manifest: { version: 1, entries: [root, fileEntry('/ten', content)] } },
    { op: 'putObjects', records: [{ digest: digestOf(content), content: content.toString() }] },
    { op: 'listImages' },
  ]);
  tt.ok(added!.ok && put!.ok);
  const erofs = statSync(join(world.broker.stateDir, 'images', added!.id as string, 'image.erofs')).size;
  const listed = (list!.images as { id: string; bytes: number }[]).find((i) => i.id === added!.id)!;
  tt.ok(listed.bytes >= content.length + erofs, `bytes (${listed.bytes}) count the content (${content.length}) and the EROFS metadata (${erofs})`);
  await world.probeAs(bob, [{ op: 'removeImage', id: added!.id }]);
});

t.test('metadata counts toward maxBytesPerUser: an image of empty files whose metadata exceeds the quota is refused', async (tt) => {
  await applyPolicy(policy({ maxBytesPerUser: 64 * 1024 }));
  const before = world.snapshot();
  // 3000 empty files: no content bytes at all, but well over 64 KiB of EROFS metadata.
  const [r] = await world.probeAs(world.users.bob!, [{ op: 'addImage', synthetic: 3000 }]);
  tt.equal(r!.name, errorName('LimitExceeded'), `LimitExceeded (${r!.name}: ${r!.message})`);
  tt.match(r!.message ?? '', /bytes/, 'the message names the byte quota');
  await world.nothingLeft(tt, before);
  await world.served(tt, world.users.alice!);
  await applyPolicy(policy({}));
});

t.test('concurrent AddImage calls of one user cannot get past maxImagesPerUser', async (tt) => {
  const carol = world.users.carol!;
  // Distinct images big enough that their builds overlap.
  const ops = Array.from({ length: 8 }, (_, k) => ({ op: 'addImage', synthetic: 30_000 + k }));
  const [r] = await world.probeAs(carol, [{ op: 'parallel', ops }]);
  const results = (r!.results as Reply[]) ?? [];
  tt.comment(JSON.stringify(results.map((x) => x.name ?? 'ok')));
  tt.ok(results.filter((x) => x.ok).length <= 3, `at most 3 of 8 accepted (${results.filter((x) => x.ok).length})`);
  tt.ok(results.filter((x) => !x.ok).every((x) => x.name === errorName('LimitExceeded')), 'the rest: LimitExceeded');
  const [list] = await world.probeAs(carol, [{ op: 'listImages' }]);
  tt.ok((list!.images as unknown[]).length <= 3, `carol holds at most 3 images (${(list!.images as unknown[]).length})`);
  await world.served(tt, world.users.bob!);
});
