// The object store's deletions off the event loop (src/store/objects.ts):
// files of objects no row names any more go later, a batch at a time; one
// published again meanwhile is never the file an unlink deletes, whether its
// old file was still queued or its unlink already under way.
import t from 'tap';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ObjectStore, objectPath } from '../../src/store/objects.js';

const hex = (n: number) => n.toString(16).padStart(64, '0');

function fixture(objects: number) {
  const root = mkdtempSync(join(tmpdir(), 'mountgate-objects.'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  // What the database records present (the test stands in for it).
  const present = new Set<string>();
  const reports: { deleted: number; failed: string[] }[] = [];
  const store = new ObjectStore(root, (d) => present.has(d), (r) => reports.push(r));
  const digests = Array.from({ length: objects }, (_, k) => hex(k + 1));
  const path = (d: string) => join(store.objectsDir, objectPath(d));
  for (const d of digests) writeFileSync(path(d), `old ${d}\n`);
  /** An upload's verified file for d, in tmp, ready to be published. */
  const upload = (d: string) => {
    const name = `up.${d}`;
    writeFileSync(join(store.tmpDir, name), `new ${d}\n`);
    return name;
  };
  return { store, present, reports, digests, path, upload };
}

t.test('discarded files are deleted after the call, and the queue reports once drained', async (tt) => {
  const { store, reports, digests, path } = fixture(100);
  store.discard(digests);
  tt.ok(digests.some((d) => existsSync(path(d))), 'files are still there when discard returns: the deletions run later');
  await store.drained();
  tt.same(digests.filter((d) => existsSync(path(d))), [], 'every discarded file is gone once drained');
  tt.same(reports, [{ deleted: 100, failed: [] }], 'one report for the whole queue');
});

t.test('an object published while its old file waits in the queue keeps the new file', async (tt) => {
  const { store, present, digests, path, upload } = fixture(100);
  store.discard(digests);
  // The last digest is past the first batch: queued, no unlink started.
  const last = digests.at(-1)!;
  tt.equal(store.unlinking(last), undefined, 'its unlink has not started');
  store.publish(upload(last), last);
  present.add(last);
  await store.drained();
  tt.equal(readFileSync(path(last), 'utf8'), `new ${last}\n`, 'the newly published file is there');
  tt.same(digests.filter((d) => d !== last && existsSync(path(d))), [], 'the others are gone');
});

t.test('an object whose old file is being unlinked is published only after that unlink', async (tt) => {
  const { store, present, digests, path, upload } = fixture(100);
  store.discard(digests);
  const first = digests[0]!;
  const pending = store.unlinking(first);
  tt.ok(pending, 'the first batch is under way as soon as discard returns');
  const tmp = upload(first);
  tt.throws(() => store.publish(tmp, first), /being deleted/, 'publishing over an unlink under way is refused');
  await pending;
  store.publish(tmp, first);
  present.add(first);
  await store.drained();
  tt.equal(readFileSync(path(first), 'utf8'), `new ${first}\n`, 'the file published after the unlink stays');
});

t.test('dropTmp removes only the files of its upload', async (tt) => {
  const { store } = fixture(0);
  for (let k = 0; k < 70; k++) writeFileSync(join(store.tmpDir, `mine.${k}`), '');
  writeFileSync(join(store.tmpDir, 'other.0'), '');
  await store.dropTmp('mine');
  tt.same(readdirSync(store.tmpDir), ['other.0'], "the upload's own files are gone, another upload's file stays");
});
