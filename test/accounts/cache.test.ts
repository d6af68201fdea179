import { mkdtempSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { AccountCache, lookupAccount, type AccountFiles } from '../../src/accounts/load.js';

/** Account files in a scratch directory, and a clock the test moves. */
function scratch(t: { teardown(fn: () => void): void }) {
  const dir = mkdtempSync(join(tmpdir(), 'mountgate-accounts.'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const files: AccountFiles = { passwd: join(dir, 'passwd'), group: join(dir, 'group'), subuid: join(dir, 'subuid'), subgid: join(dir, 'subgid') };
  writeFileSync(files.passwd, 'root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n');
  writeFileSync(files.group, 'alice:x:1000:\n');
  writeFileSync(files.subuid, 'alice:100000:65536\n');
  writeFileSync(files.subgid, 'alice:100000:65536\n');
  // The files were written "long ago": their changes lie safely in the past.
  let now = BigInt(Date.now()) * 1_000_000n + 10_000_000_000n;
  const clock = { now: () => now, advance: (s: number) => (now += BigInt(s) * 1_000_000_000n) };
  return { dir, files, clock };
}

t.test('the cache answers what lookupAccount answers, from one read of each file', async (tt) => {
  const { files, clock } = scratch(tt);
  const cache = new AccountCache(files, clock.now);
  tt.same(cache.lookup(1000), lookupAccount(1000, files));
  tt.equal(cache.lookup(1000), cache.lookup(1000), 'unchanged files: the remembered answer');
  tt.equal(cache.lookup(4242), undefined, 'no such user');
  tt.throws(() => (cache.lookup(1000)!.subuids as { start: number }[]).push({ start: 0 }), 'the shared answer cannot be changed by one call for the others');
});

t.test('a changed /etc/subuid takes effect on the next lookup, however it was changed', async (tt) => {
  const { dir, files, clock } = scratch(tt);
  const cache = new AccountCache(files, clock.now);
  tt.same(cache.lookup(1000)!.subuids, [{ start: 100000, count: 65536 }]);

  // Rewritten in place, same size (a range moved): the mtime and ctime change.
  writeFileSync(files.subuid, 'alice:200000:65536\n');
  tt.same(cache.lookup(1000)!.subuids, [{ start: 200000, count: 65536 }], 'rewritten in place');

  // Replaced by rename, as shadow's tools do: a new inode.
  writeFileSync(join(dir, 'subuid+'), 'alice:300000:10\n');
  renameSync(join(dir, 'subuid+'), files.subuid);
  tt.same(cache.lookup(1000)!.subuids, [{ start: 300000, count: 10 }], 'replaced by rename');

  // Removed: no ranges at all, at once (never the last ones seen).
  rmSync(files.subuid);
  tt.same(cache.lookup(1000)!.subuids, [], 'removed');
  writeFileSync(files.subuid, 'alice:400000:5\n');
  tt.same(cache.lookup(1000)!.subuids, [{ start: 400000, count: 5 }], 'created again');

  // The user removed from /etc/passwd: no account on the next call.
  writeFileSync(files.passwd, 'root:x:0:0:root:/root:/bin/sh\n');
  tt.equal(cache.lookup(1000), undefined, 'user removed');
});

t.test('a change the file system clock could not show is still seen: a recently changed file is read on every lookup', async (tt) => {
  const { files } = scratch(tt);
  // A second write within one tick of a coarse file system clock leaves size,
  // mtime and ctime as they were, so a file changed within the last ticks
  // cannot be trusted: the cache reads it again (a new answer) on every lookup.
  const changed = statSync(files.subuid, { bigint: true }).ctimeNs;
  let now = changed + 500_000_000n;
  const cache = new AccountCache(files, () => now);
  const a = cache.lookup(1000);
  const b = cache.lookup(1000);
  tt.not(b, a, 'read again half a second after the change');
  tt.same(b, a);
  // Long after its last change, the file is trusted: the remembered answer...
  now = changed + 60_000_000_000n;
  const c = cache.lookup(1000);
  tt.equal(cache.lookup(1000), c, 'remembered once quiet');
  // ...until it changes again.
  writeFileSync(files.subuid, 'alice:900000:1\n');
  now = statSync(files.subuid, { bigint: true }).ctimeNs;
  tt.same(cache.lookup(1000)!.subuids, [{ start: 900000, count: 1 }]);
});

t.test('a file whose change time is ahead of the clock is never trusted', async (tt) => {
  const { files } = scratch(tt);
  const past = () => 0n;
  const cache = new AccountCache(files, past);
  const a = cache.lookup(1000);
  tt.not(cache.lookup(1000), a, 'read again on every lookup');
  tt.same(cache.lookup(1000), a);
});
