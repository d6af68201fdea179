// The store's durable(): commits do not wait for the disk on the event loop;
// durable() syncs the write-ahead log off it, once for every commit made
// while the previous sync ran, and never when nothing changed; it keeps no fd
// open between syncs. Real SQLite files; the sync is the real fsync, counted.
import t from 'tap';
import { fsync, mkdtempSync, readdirSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StoreDb, type NewImage } from '../../src/store/db.js';

const hex = (n: number) => n.toString(16).padStart(64, '0');
const image = (id: number): NewImage => ({ id: hex(id), entries: 2, bytes: 100, imageBytes: 4096, objects: { [hex(1000 + id)]: 100 } });

/** A database in a scratch directory whose log syncs are counted; `hold` keeps each sync from finishing until released. */
function counted(tt: Tap.Test, hold = false) {
  const dir = mkdtempSync(join(tmpdir(), 'mountgate-durable.'));
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const syncs: number[] = [];
  const held: (() => void)[] = [];
  let fail: NodeJS.ErrnoException | undefined;
  const db = new StoreDb(join(dir, 'store.db'), undefined, (fd, done) => {
    syncs.push(fd);
    const finish = () => {
      const err = fail;
      fail = undefined;
      if (err) done(err);
      else fsync(fd, done);
    };
    if (hold) held.push(finish);
    else finish();
  });
  tt.teardown(() => db.close());
  return { db, syncs, dir, release: () => held.splice(0).forEach((f) => f()), failNext: (e: NodeJS.ErrnoException) => (fail = e) };
}

/** Waits (a turn at a time) until `n` syncs have started: the log is opened off the loop first. */
async function started(syncs: number[], n: number): Promise<void> {
  for (let k = 0; k < 1000 && syncs.length < n; k++) await new Promise((r) => setTimeout(r, 1));
}

t.test('nothing changed: no sync', async (tt) => {
  const { db, syncs } = counted(tt);
  await db.durable();
  await db.durable();
  tt.equal(syncs.length, 0, 'opening left nothing to sync');
  db.register(image(1), 1000);
  await db.durable();
  tt.equal(syncs.length, 1, 'one commit, one sync');
  await db.durable();
  tt.equal(syncs.length, 1, 'synced already: no second');
});

t.test('the sync is of the write-ahead log', async (tt) => {
  const { db, syncs, dir } = counted(tt);
  db.register(image(1), 1000);
  await db.durable();
  tt.equal(syncs.length, 1);
  tt.ok(statSync(join(dir, 'store.db-wal')).size > 0, 'the commit is in the log');
  const logFds = readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).endsWith('store.db-wal');
    } catch {
      return false;
    }
  });
  // SQLite's own handle on the log is the only one left: the sync's is closed.
  tt.equal(logFds.length, 1, 'one fd on the log (SQLite\'s)');
});

t.test('commits made while a sync runs share the next one', async (tt) => {
  const { db, syncs, release } = counted(tt, true);
  db.register(image(1), 1000);
  let firstDone = false;
  const first = db.durable().then(() => (firstDone = true));
  await started(syncs, 1);
  tt.equal(syncs.length, 1, 'the first sync started');
  // Ten more calls, each after a commit of its own, while the first sync is held.
  const later: Promise<void>[] = [];
  for (let k = 2; k <= 11; k++) {
    db.register(image(k), 1000);
    later.push(db.durable());
  }
  tt.equal(syncs.length, 1, 'no second sync while the first runs');
  let laterDone = false;
  void Promise.all(later).then(() => (laterDone = true));
  release();
  await first;
  tt.ok(firstDone);
  await started(syncs, 2);
  tt.notOk(laterDone, 'the later commits are not covered by the first sync');
  tt.equal(syncs.length, 2, 'one more sync for all ten');
  release();
  await Promise.all(later);
  tt.equal(syncs.length, 2);
  await db.durable();
  tt.equal(syncs.length, 2, 'and then nothing is left to sync');
});

t.test('a failed sync rejects its callers, and the next call syncs again', async (tt) => {
  const { db, syncs, failNext } = counted(tt);
  db.register(image(1), 1000);
  failNext(Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' }));
  await tt.rejects(db.durable(), /EIO/, 'the caller hears of it');
  await db.durable();
  tt.equal(syncs.length, 2, 'the commit was not taken for synced');
});
