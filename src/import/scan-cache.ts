// The client's cache of archive scans: importing the same layer tarball
// again (the same user) takes the layer as the last scan of that file found
// it (entries, file digests, diff ID, tar split) instead of reading and
// hashing every byte again. Kept per user in $XDG_CACHE_HOME/mountgate/scans,
// one file per archive, at most MAX_SCANS of them.
//
// Why it is safe, as for the digest cache (src/client/digest-cache.ts): the
// broker never trusts what the client says a file holds (it hashes the bytes
// of any object the user has not proven, so a wrong scan can only give this
// user an image of content they proved before); a scan is used only while
// the archive's dev, inode, size, mtime and ctime are all what they were
// before it was read (any write changes ctime, which no unprivileged call
// can set back), with the same options; an archive changed less than
// RACY_NS before its scan began is not recorded. Only a regular file named
// on the command line is cached, never a pipe.
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeSync, type BigIntStats } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { defaultDigestCachePath } from '../client/digest-cache.js';
import type { Compression } from './decompress.js';
import type { LayerResult } from './layers.js';
import { decodeSplit, encodeSplit } from './tarsplit.js';

const VERSION = 'mountgate scan cache 1';
/** Scans kept: the most recently written. */
const MAX_SCANS = 8;
const RACY_NS = 2_000_000_000n;

export interface CachedScan {
  layer: LayerResult;
  compression: Compression;
}

/** What a scan depends on: the archive file as it was, and the options that change what a scan keeps. */
function keyOf(st: BigIntStats, options: Record<string, unknown>): string {
  return JSON.stringify({ dev: String(st.dev), ino: String(st.ino), size: String(st.size), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs), options });
}

function scansDir(): string {
  return join(defaultDigestCachePath(), '..', 'scans');
}

function fileOf(key: string): string {
  return join(scansDir(), `${createHash('sha256').update(key).digest('hex')}.json.gz`);
}

/** Buffers and Maps through JSON (JSON.stringify has already called Buffer's toJSON: the raw value is this[key]). */
function replacer(this: Record<string, unknown>, key: string, value: unknown): unknown {
  const raw = this[key];
  if (Buffer.isBuffer(raw)) return { $buffer: raw.toString('base64') };
  if (raw instanceof Map) return { $map: [...raw] };
  return value;
}
function reviver(_key: string, value: unknown): unknown {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    const v = value as { $buffer?: string; $map?: [unknown, unknown][] };
    if (typeof v.$buffer === 'string') return Buffer.from(v.$buffer, 'base64');
    if (Array.isArray(v.$map)) return new Map(v.$map);
  }
  return value;
}

/** The archive's stat before a scan: what the cache is keyed by. */
export function archiveStat(path: string): BigIntStats | undefined {
  try {
    const st = statSync(path, { bigint: true });
    return st.isFile() ? st : undefined;
  } catch {
    return undefined;
  }
}

/** The scan recorded for this archive as `st` describes it, with these options; undefined when there is none (or it cannot be read). */
export function loadScan(st: BigIntStats, options: Record<string, unknown>): CachedScan | undefined {
  const key = keyOf(st, options);
  try {
    const data = JSON.parse(gunzipSync(readFileSync(fileOf(key))).toString('utf8'), reviver) as { version: string; key: string; compression: Compression; layer: LayerResult & { split?: unknown } };
    if (data.version !== VERSION || data.key !== key) return undefined;
    const layer = { ...data.layer, ...(Buffer.isBuffer(data.layer.split) ? { split: decodeSplit(data.layer.split) } : {}) } as LayerResult;
    return { layer, compression: data.compression };
  } catch {
    return undefined;
  }
}

/**
 * Records a scan of the archive `st` described before it was read (skipped
 * when it had changed less than RACY_NS before `startedNs`); keeps the
 * newest MAX_SCANS. A failure to write is ignored (the next import reads the
 * archive again).
 */
export function saveScan(st: BigIntStats, options: Record<string, unknown>, scan: CachedScan, startedNs: bigint): void {
  if (startedNs - st.ctimeNs < RACY_NS || startedNs - st.mtimeNs < RACY_NS) return;
  const key = keyOf(st, options);
  const path = fileOf(key);
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    mkdirSync(scansDir(), { recursive: true, mode: 0o700 });
    const layer = { ...scan.layer, ...(scan.layer.split ? { split: encodeSplit(scan.layer.split) } : {}) };
    const data = gzipSync(JSON.stringify({ version: VERSION, key, compression: scan.compression, layer }, replacer), { level: 1 });
    const fd = openSync(tmp, 'w', 0o600);
    try {
      for (let at = 0; at < data.length; ) at += writeSync(fd, data, at);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
    prune();
  } catch {
    try {
      unlinkSync(tmp);
    } catch {
      // never made
    }
  }
}

/** Removes all but the MAX_SCANS newest scans. */
function prune(): void {
  const dir = scansDir();
  const scans = readdirSync(dir)
    .filter((f) => f.endsWith('.json.gz'))
    .map((f) => ({ f, t: statSync(join(dir, f)).mtimeMs }))
    .sort((a, b) => b.t - a.t);
  for (const { f } of scans.slice(MAX_SCANS)) unlinkSync(join(dir, f));
}
