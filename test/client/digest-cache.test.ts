// The client's digest cache on its own (pure: a file in a temporary
// directory): a record is used only while every field of the file's stat
// matches, a file changed too recently is not recorded, and a file that is
// missing, of another version or cut short is an empty cache, never an error.
// The same through the real CLI and broker, as a user: test/images/digest-cache.test.ts.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DIGEST_ALGORITHM, DigestCache, defaultDigestCachePath } from '../../src/client/digest-cache.js';

const dir = mkdtempSync(join(tmpdir(), 'mountgate-digest-cache-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const NS = 1_000_000_000n;
const stat = { dev: 2049n, ino: 1234567n, size: 4096n, mtimeNs: 1_700_000_000n * NS + 5n, ctimeNs: 1_700_000_100n * NS + 7n };
const digest = 'ab'.repeat(32);
const later = stat.ctimeNs + 60n * NS;

t.test('a record saved is found again by exactly the same stat, and by no other', async (tt) => {
  const path = join(dir, 'exact');
  const c = DigestCache.load(path);
  c.set(stat, digest, later);
  c.save();
  tt.equal(statSync(path).mode & 0o777, 0o600, 'the file is the user\'s alone');
  const back = DigestCache.load(path);
  tt.equal(back.get(stat), digest, 'the same dev, inode, size, mtime and ctime: the digest');
  for (const field of ['dev', 'ino', 'size', 'mtimeNs', 'ctimeNs'] as const) {
    tt.equal(back.get({ ...stat, [field]: stat[field] + 1n }), undefined, `${field} one more: no digest`);
  }
  tt.equal(back.hits, 1, 'one hit');
  tt.equal(back.misses, 5, 'five misses');
});

t.test('a file whose ctime or mtime is within two seconds of its hashing is not recorded (a write in the same tick may keep ctime)', async (tt) => {
  const path = join(dir, 'racy');
  const c = DigestCache.load(path);
  c.set(stat, digest, stat.ctimeNs + NS);
  c.set({ ...stat, ino: 9n, mtimeNs: later - NS }, digest, later);
  c.save();
  tt.notOk(safeRead(path), 'nothing was added, so nothing was written');
  tt.equal(DigestCache.load(path).get(stat), undefined, 'not found');
});

t.test('missing, foreign, or cut-short files are an empty cache', async (tt) => {
  tt.equal(DigestCache.load(join(dir, 'absent')).get(stat), undefined, 'no file');
  const foreign = join(dir, 'foreign');
  writeFileSync(foreign, 'mountgate digest cache 0 something-else\n'.padEnd(200, 'x'));
  tt.equal(DigestCache.load(foreign).get(stat), undefined, 'another version or algorithm');
  const cut = join(dir, 'cut');
  const c = DigestCache.load(cut);
  c.set(stat, digest, later);
  c.save();
  truncateSync(cut, statSync(cut).size - 1);
  tt.equal(DigestCache.load(cut).get(stat), undefined, 'a record cut short is not read');
});

t.test('a new record replaces the old one for the same inode; older records are kept', async (tt) => {
  const path = join(dir, 'replace');
  const a = DigestCache.load(path);
  a.set(stat, digest, later);
  a.set({ ...stat, ino: 42n }, 'cd'.repeat(32), later);
  a.save();
  const b = DigestCache.load(path);
  const changed = { ...stat, ctimeNs: stat.ctimeNs + NS };
  b.set(changed, 'ef'.repeat(32), later + NS);
  b.save();
  const c = DigestCache.load(path);
  tt.equal(c.get(stat), undefined, 'the old stat no longer matches');
  tt.equal(c.get(changed), 'ef'.repeat(32), 'the new one does');
  tt.equal(c.get({ ...stat, ino: 42n }), 'cd'.repeat(32), 'another file\'s record is kept');
});

t.test('the default place is $XDG_CACHE_HOME/mountgate, named by the digest algorithm', async (tt) => {
  const saved = process.env.XDG_CACHE_HOME;
  t.teardown(() => (saved === undefined ? delete process.env.XDG_CACHE_HOME : (process.env.XDG_CACHE_HOME = saved)));
  process.env.XDG_CACHE_HOME = '/somewhere/cache';
  tt.equal(defaultDigestCachePath(), `/somewhere/cache/mountgate/digests-${DIGEST_ALGORITHM}`);
  process.env.XDG_CACHE_HOME = 'relative';
  tt.match(defaultDigestCachePath(), /\/\.cache\/mountgate\//, 'a relative XDG_CACHE_HOME is ignored, as the spec says');
});

function safeRead(path: string): Buffer | undefined {
  try {
    return readFileSync(path);
  } catch {
    return undefined;
  }
}
