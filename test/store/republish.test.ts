// The re-upload race of a removal, made certain rather than hoped for: the
// front's object store (ImageService, with its real upload helper) removes
// an image and another user uploads the same objects while the unlinks of
// their old files are queued in libuv's pool and held there (every pool
// thread is kept busy opening a FIFO nobody writes yet). The objects whose
// unlink had not started are published over their old files; those being
// unlinked wait for it; none is lost, and the upload is answered once all
// are in.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readdirSync, rmSync, statSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../helpers/paths.js';

// From dist: the service spawns its upload helper next to its own module.
const dist = (p: string) => import(join(repoRoot, 'dist', 'src', p));
const { ImageService } = (await dist('broker/images.js')) as typeof import('../../src/broker/images.js');
const { FsVerityHasher } = (await dist('verity/fsverity.js')) as typeof import('../../src/verity/fsverity.js');
const { recordHeader } = (await dist('client/images.js')) as typeof import('../../src/client/images.js');
const { pipe } = (await dist('sys/syscalls.js')) as typeof import('../../src/sys/syscalls.js');
const { objectPath, unlinkBatch } = (await dist('store/objects.js')) as typeof import('../../src/store/objects.js');
const { ObjectList } = (await dist('store/object-list.js')) as typeof import('../../src/store/object-list.js');

const content = (k: number) => Buffer.from(`object ${k}\n`);
const digestOf = (b: Buffer) => new FsVerityHasher().update(b).digest().toString('hex');
/** 40 objects: one batch of unlinks under way (unlinkBatch of them), the rest queued behind it. */
const ks = Array.from({ length: 40 }, (_, k) => k);
const digests = ks.map((k) => digestOf(content(k)));
const sizeOf = Object.fromEntries(ks.map((k) => [digests[k]!, content(k).length]));
const tick = () => new Promise((r) => setImmediate(r));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('objects uploaded again while their old files are being unlinked are all kept', async (tt) => {
  const dir = mkdtempSync(join(tmpdir(), 'mountgate-republish.'));
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const reports: { deleted: number }[] = [];
  const svc = new ImageService({
    stateDir: join(dir, 'state'),
    policy: () => ({ version: 1 }),
    features: { fileBackedErofs: false, idmappedMounts: false, fsVerity: false, overlayDataOnly: false },
    fdDeadlineMs: 5000,
    onDeleted: (r) => reports.push(r),
  });
  const image = (id: string) => ({ id: id.repeat(64), entries: 41, bytes: 400, imageBytes: 10, objects: ObjectList.pack(sizeOf) });
  const upload = (uid: number) => {
    const [r, w] = pipe();
    const done = svc.receive(uid, r, false);
    for (const k of ks) {
      writeSync(w, recordHeader(digests[k]!, content(k).length));
      writeSync(w, content(k));
    }
    closeSync(w);
    return done;
  };
  const file = (d: string) => join(svc.store.objectsDir, objectPath(d));

  await svc.registry.register(image('a'), Buffer.from('image a'), 1001).durable;
  tt.equal((await upload(1001)).objects, 40, 'the first user uploads the 40 objects');
  const oldInodes = digests.map((d) => statSync(file(d)).ino);

  // Every pool thread busy: the unlinks the removal issues wait in the pool's queue.
  const threads = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
  const fifos = Array.from({ length: threads }, (_, i) => join(dir, `fifo${i}`));
  for (const f of fifos) execFileSync('mkfifo', [f]);
  const held = fifos.map((f) => open(f, 'r'));
  svc.remove(1001, image('a').id);
  await tick();
  const inFlight = digests.filter((d) => svc.store.unlinking(d));
  const queuedCount = ks.length - unlinkBatch;
  tt.ok(queuedCount > 0, 'some unlinks are left queued behind the batch');
  tt.equal(inFlight.length, unlinkBatch, `the rows went, and a batch of ${unlinkBatch} unlinks is under way (held in the pool)`);

  // Registered in turns: its rows (what the upload is checked against) are in after a few;
  // its file waits for the held pool like the unlinks, so durable is not awaited here.
  const b = svc.registry.register(image('b'), Buffer.from('image b'), 1002);
  for (let k = 0; k < 100 && svc.registry.ownedBy(image('b').id, 1002)?.missing !== 40; k++) await tick();
  tt.equal(svc.registry.ownedBy(image('b').id, 1002)?.missing, 40, "the second image's rows are in: the second user lacks all 40");
  const second = upload(1002);
  // Those still queued are published over their old files; those being unlinked wait for it.
  const queued = digests.filter((d) => !inFlight.includes(d));
  const published = () => queued.every((d) => statSync(file(d)).ino !== oldInodes[digests.indexOf(d)]);
  const tmpLeft = () => readdirSync(svc.store.tmpDir).length;
  // Bounded, for a clear failure (a wrong front publishes those being unlinked at once, and tmp stays empty).
  for (let k = 0; k < 500 && !(published() && tmpLeft() >= unlinkBatch); k++) await sleep(20);
  tt.ok(published(), `the ${queuedCount} whose unlink had not started are published over their old files`);
  tt.equal(tmpLeft(), unlinkBatch, `the ${unlinkBatch} objects whose old files are being unlinked wait in tmp, not yet published`);
  tt.ok(inFlight.every((d) => svc.store.unlinking(d)), 'their unlinks are still held');

  // Let the pool go: the unlinks finish, then the waiting objects are published.
  for (const f of fifos) closeSync(openSync(f, 'w'));
  for (const h of held) await (await h).close();
  const put = await second;
  await b.durable;
  tt.equal(put.objects, 40, 'the second upload is credited with all 40 objects');
  await svc.store.drained();
  const lost = digests.filter((d) => {
    try {
      return statSync(file(d)).size !== sizeOf[d];
    } catch {
      return true;
    }
  });
  tt.same(lost, [], 'every object of the second image is in the store');
  tt.ok(inFlight.every((d) => statSync(file(d)).ino !== oldInodes[digests.indexOf(d)]), `the files of the ${unlinkBatch} are new: published after their old ones were unlinked`);
  tt.ok(digests.every((d) => svc.registry.db.isPresent(d)), 'and recorded present');
  tt.equal(svc.registry.ownedBy(image('b').id, 1002)?.missing, 0, 'the second user lacks nothing');
  tt.same(svc.registry.db.check(), [], 'the database is consistent');
  tt.same(reports.at(-1)?.deleted, unlinkBatch, `the report counts the ${unlinkBatch} old files unlinked`);
  svc.registry.db.close();
});
