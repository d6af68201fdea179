// The client's cache of file digests, so that importing a tree again (the
// same user, `image add DIR` once more after a few changes) reads only the
// files that changed. Kept per user in $XDG_CACHE_HOME/mountgate (default
// ~/.cache/mountgate), one file per digest algorithm.
//
// Why a cached digest is safe to use:
// - The broker never trusts it: an object is served only to a user who has
//   proven its content (uploaded bytes the broker hashed itself), so a wrong
//   digest can only give this user an image of content they proved before,
//   never anyone else's.
// - A record is used only while the file's dev, inode, size, mtime and ctime
//   are all what they were when it was hashed. Any write, truncation,
//   rename over, chmod or utimes sets ctime to the current time, and no
//   unprivileged call sets ctime to a chosen value; a new file on a reused
//   inode gets a new ctime too. So a record matches only the bytes it was
//   made from.
// - The stat a record keeps is the one taken before the file was read: a
//   write during the read changes ctime and the record no longer matches.
// - A file whose ctime is within RACY_NS of the moment it was hashed is not
//   recorded (the "racy git" case): a write in the same timestamp tick as a
//   write before it may leave ctime unchanged.
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync, unlinkSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { BigIntStats } from 'node:fs';

/** What a record's digest is: fs-verity, sha256 over 4 KiB blocks, no salt (the file name says it too). */
export const DIGEST_ALGORITHM = 'fsverity-sha256-4k';
const MAGIC = Buffer.from(`mountgate digest cache 1 ${DIGEST_ALGORITHM}\n`);
/** dev, ino, size, mtime ns, ctime ns (8 bytes each), digest (32). */
const RECORD = 5 * 8 + 32;
/** At most this many records are kept (about 29 MiB): those of the last import first, then older ones. */
const MAX_RECORDS = 400_000;
/** A file changed this recently when it was hashed may change again without a new ctime: not recorded. */
const RACY_NS = 2_000_000_000n;

interface CachedStat {
  dev: bigint;
  ino: bigint;
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

/** The default place: $XDG_CACHE_HOME/mountgate/digests-ALGORITHM (an absolute XDG_CACHE_HOME only, as the spec says). */
export function defaultDigestCachePath(): string {
  const xdg = process.env.XDG_CACHE_HOME;
  const base = xdg && xdg.startsWith('/') ? xdg : join(homedir(), '.cache');
  return join(base, 'mountgate', `digests-${DIGEST_ALGORITHM}`);
}

export class DigestCache {
  /** "dev:ino" -> the record's bytes (in the loaded file, or a new one). */
  private readonly records = new Map<string, Buffer>();
  /** Keys looked up or added by this import, in that order: written first. */
  private readonly used = new Set<string>();
  private added = 0;
  hits = 0;
  misses = 0;

  private constructor(readonly path: string) {}

  /** The cache at `path`; empty when the file is missing, of another version, or unreadable (a cache is never a reason to fail). */
  static load(path = defaultDigestCachePath()): DigestCache {
    const cache = new DigestCache(path);
    let data: Buffer;
    try {
      data = readFileSync(path);
    } catch {
      return cache;
    }
    if (data.length < MAGIC.length || !data.subarray(0, MAGIC.length).equals(MAGIC)) return cache;
    for (let at = MAGIC.length; at + RECORD <= data.length; at += RECORD) {
      const r = data.subarray(at, at + RECORD);
      cache.records.set(`${r.readBigUInt64LE(0)}:${r.readBigUInt64LE(8)}`, r);
    }
    return cache;
  }

  /** The digest (hex) recorded for this file as `st` describes it, if every field still matches. */
  get(st: CachedStat): string | undefined {
    const key = `${st.dev}:${st.ino}`;
    const r = this.records.get(key);
    if (r && r.readBigUInt64LE(16) === st.size && r.readBigInt64LE(24) === st.mtimeNs && r.readBigInt64LE(32) === st.ctimeNs) {
      this.used.add(key);
      this.hits++;
      return r.toString('hex', 40, 72);
    }
    this.misses++;
    return undefined;
  }

  /** Records `digest` for the file `st` describes (its stat from before it was read); `nowNs` is when it was hashed. */
  set(st: CachedStat, digest: string, nowNs: bigint = BigInt(Date.now()) * 1_000_000n): void {
    if (nowNs - st.ctimeNs < RACY_NS || nowNs - st.mtimeNs < RACY_NS) return;
    const r = Buffer.alloc(RECORD);
    r.writeBigUInt64LE(st.dev, 0);
    r.writeBigUInt64LE(st.ino, 8);
    r.writeBigUInt64LE(st.size, 16);
    r.writeBigInt64LE(st.mtimeNs, 24);
    r.writeBigInt64LE(st.ctimeNs, 32);
    r.write(digest, 40, 32, 'hex');
    const key = `${st.dev}:${st.ino}`;
    this.records.set(key, r);
    this.used.add(key);
    this.added++;
  }

  /**
   * Writes the cache back when this import added records: this import's
   * first, then older ones up to MAX_RECORDS, into a file of the user's own
   * (mode 0600) renamed over the old one. A failure to write is ignored (the
   * next import hashes again).
   */
  save(): void {
    if (this.added === 0) return;
    const tmp = `${this.path}.${process.pid}.tmp`;
    try {
      mkdirSync(join(this.path, '..'), { recursive: true, mode: 0o700 });
      const keys = [...this.used, ...[...this.records.keys()].filter((k) => !this.used.has(k))].slice(0, MAX_RECORDS);
      const out = Buffer.allocUnsafe(MAGIC.length + keys.length * RECORD);
      MAGIC.copy(out, 0);
      keys.forEach((k, i) => this.records.get(k)!.copy(out, MAGIC.length + i * RECORD));
      const fd = openSync(tmp, 'w', 0o600);
      try {
        for (let at = 0; at < out.length; ) at += writeSync(fd, out, at);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.path);
      this.added = 0;
    } catch {
      try {
        unlinkSync(tmp);
      } catch {
        // never made
      }
    }
  }
}

/** The fields of an lstat a record is checked against. */
export function cachedStat(st: BigIntStats): CachedStat {
  return { dev: st.dev, ino: st.ino, size: st.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs };
}
