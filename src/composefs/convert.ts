// Lossless conversion between composefs dump entries and a manifest. Every
// value of a dump line lands in a manifest field; fields that equal what the
// format implies (nlink of a plain file, size of a symlink) are left out, and
// put back on the way out, so dump -> manifest -> dump gives the same text.
// Normalizations (only ever applied to input mkcomposefs itself would ignore or
// reinterpret): entries are sorted by path, a hardlink line is written with its
// target's fields, and in lenient mode a symlink's SIZE and CONTENT and a
// non-device's RDEV are dropped. Byte strings (paths, targets, keys) become
// plain strings when they are UTF-8 and {"base64"} otherwise, so any bytes
// survive the trip; entries are sorted and compared as bytes.
import type { Entry, FileEntry, Manifest } from '../schema/types.generated.js';
import { InvalidManifestError } from '../manifest/errors.js';
import { MAX_FILE_SIZE } from '../manifest/limits.js';
import { normalizeLookupPath, parentPath, pathSortKey } from '../manifest/paths.js';
import { byteText, bytesOf, codecFor, showText, type ByteText } from '../manifest/text.js';
import { decodeBase64 } from '../manifest/check.js';
import { validateManifest } from '../manifest/load.js';
import { dumpBytes, endsWithNewline, parseDump, type DumpEntry } from './dump.js';
import { ENTRY_TYPE_BITS, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK } from './format.js';

function safeNumber(v: bigint, what: string, max: number, pointer: string): number {
  if (v > BigInt(max)) throw new InvalidManifestError(`${what} ${v} exceeds the maximum ${max}`, pointer);
  return Number(v);
}

type Attributed = Exclude<Entry, { type: 'hardlink' }>;

function baseFields(d: DumpEntry, path: ByteText, pointer: string): Omit<Attributed, 'type'> {
  const fields: Omit<Attributed, 'type'> = {
    path,
    mode: d.mode & 0o7777,
    uid: d.uid,
    gid: d.gid,
    mtime: { sec: safeNumber(d.mtimeSec, 'mtime seconds', Number.MAX_SAFE_INTEGER, pointer), nsec: d.mtimeNsec },
  };
  if (d.mtimeNsec > 999_999_999) throw new InvalidManifestError(`mtime nanoseconds ${d.mtimeNsec} is not below 1000000000`, pointer);
  if (d.xattrs.length > 0) {
    fields.xattrs = d.xattrs.map((x) => ({ key: byteText(x.key), value: x.value.toString('base64') }));
  }
  return fields;
}

/** Adds "size" only when non-zero: for these types it is informational. */
function withInfoSize<T extends object>(entry: T, size: bigint, pointer: string): T & { size?: number } {
  return size === 0n ? entry : { ...entry, size: safeNumber(size, 'size', MAX_FILE_SIZE, pointer) };
}

/** Path and type first: the order a reader scans for. */
function readableOrder(e: Entry): Entry {
  const { path, type, ...rest } = e;
  return { path, type, ...rest } as Entry;
}

function entryFromDump(d: DumpEntry, pointer: string): Entry {
  return readableOrder(entryFields(d, pointer));
}

function entryFields(d: DumpEntry, pointer: string): Entry {
  const path = byteText(d.path);
  if (d.hardlink) {
    // Normalized on the bytes (only "/" matters to it), as a binary string.
    const target = Buffer.from(normalizeLookupPath(d.payload!.toString('latin1')), 'latin1');
    return { path, type: 'hardlink', target: byteText(target) };
  }
  const base = baseFields(d, path, pointer);
  switch (d.mode & S_IFMT) {
    case S_IFDIR:
      return withInfoSize({ ...base, type: 'dir' as const }, d.size, pointer);
    case S_IFREG: {
      const file: FileEntry = { ...base, type: 'file', size: safeNumber(d.size, 'file size', MAX_FILE_SIZE, pointer) };
      if (d.digest !== null) file.digest = d.digest;
      if (d.content !== null && d.content.length > 0) file.inline = d.content.toString('base64');
      if (d.payload !== null) file.backing = byteText(d.payload);
      return file;
    }
    case S_IFLNK:
      return { ...base, type: 'symlink', target: byteText(d.payload!) };
    case S_IFCHR:
      return d.rdev === 0
        ? withInfoSize({ ...base, type: 'whiteout' as const }, d.size, pointer)
        : withInfoSize({ ...base, type: 'chardev' as const, rdev: d.rdev }, d.size, pointer);
    case S_IFBLK:
      return withInfoSize({ ...base, type: 'blockdev' as const, rdev: d.rdev }, d.size, pointer);
    case S_IFIFO:
      return withInfoSize({ ...base, type: 'fifo' as const }, d.size, pointer);
    case S_IFSOCK:
      return withInfoSize({ ...base, type: 'socket' as const }, d.size, pointer);
    default:
      throw new InvalidManifestError(`mode ${d.mode.toString(8)} has no valid file type`, pointer);
  }
}

/**
 * The link count the format implies: 2 + subdirectories for a directory,
 * 1 + hardlinks pointing at it for anything else; keyed by the path as a
 * string of codecFor(entries).
 */
export function defaultLinkCounts(entries: Entry[]): Map<string, number> {
  const codec = codecFor(entries);
  const counts = new Map<string, number>();
  for (const e of entries) if (e.type !== 'hardlink') counts.set(codec.text(e.path), e.type === 'dir' ? 2 : 1);
  for (const e of entries) {
    const path = codec.text(e.path);
    if (path === '/') continue;
    const counted = e.type === 'dir' ? parentPath(path) : e.type === 'hardlink' ? codec.text(e.target) : undefined;
    if (counted !== undefined && counts.has(counted)) counts.set(counted, counts.get(counted)! + 1);
  }
  return counts;
}

/** Points hardlinks at the final target, as composefs resolves chains. */
function resolveHardlinkChains(entries: Entry[], lines: number[]): void {
  const key = codecFor(entries).text;
  const byPath = new Map(entries.map((e) => [key(e.path), e] as const));
  entries.forEach((e, i) => {
    if (e.type !== 'hardlink') return;
    const pointer = `line ${lines[i]}`;
    const path = key(e.path);
    if (key(e.target) === path) throw new InvalidManifestError(`hardlink "${showText(e.path)}" points to itself`, pointer);
    const seen = new Set<string>([path]);
    let target = byPath.get(key(e.target));
    while (target?.type === 'hardlink') {
      const at = key(target.path);
      if (seen.has(at)) throw new InvalidManifestError(`hardlink "${showText(e.path)}" is part of a cycle of hardlinks`, pointer);
      seen.add(at);
      e.target = target.target;
      target = byPath.get(key(e.target));
    }
  });
}

export interface DumpToManifestOptions {
  name?: string;
}

/** Builds a checked manifest from parsed dump entries. */
export function dumpToManifest(dump: DumpEntry[], options: DumpToManifestOptions = {}): Manifest {
  const keyed = dump.map((d, i) => {
    const entry = entryFromDump(d, `line ${i + 1}`);
    return { entry, nlink: d.nlink, key: pathSortKey(entry.path), line: i + 1 };
  });
  keyed.sort((a, b) => Buffer.compare(a.key, b.key));
  for (let i = 1; i < keyed.length; i++) {
    if (keyed[i]!.key.equals(keyed[i - 1]!.key)) {
      throw new InvalidManifestError(`path "${showText(keyed[i]!.entry.path)}" appears twice (also on line ${keyed[i - 1]!.line})`, `line ${keyed[i]!.line}`);
    }
  }
  const entries = keyed.map((k) => k.entry);
  resolveHardlinkChains(entries, keyed.map((k) => k.line));
  const defaults = defaultLinkCounts(entries);
  const key = codecFor(entries).text;
  keyed.forEach((k) => {
    if (k.entry.type !== 'hardlink' && defaults.get(key(k.entry.path)) !== k.nlink) {
      if (k.nlink === 0) throw new InvalidManifestError('nlink is 0', `line ${k.line}`);
      (k.entry as Attributed).nlink = k.nlink;
    }
  });
  const manifest: Manifest = { version: 1, ...(options.name ? { name: options.name } : {}), entries };
  try {
    return validateManifest(manifest);
  } catch (err) {
    // Name the dump line rather than the position in the sorted manifest.
    if (err instanceof InvalidManifestError) {
      const m = /^\/entries\/(\d+)(.*)$/.exec(err.pointer);
      const k = m ? keyed[Number(m[1])] : undefined;
      if (k) throw new InvalidManifestError(`${showText(k.entry.path)}${m![2] ? ` (${m![2].slice(1)})` : ''}: ${err.detail}`, `line ${k.line}`);
    }
    throw err;
  }
}

function dumpFromEntry(e: Attributed, nlink: number): DumpEntry {
  const d: DumpEntry = {
    path: bytesOf(e.path),
    size: 0n,
    mode: ENTRY_TYPE_BITS[e.type] | e.mode,
    hardlink: false,
    nlink: e.nlink ?? nlink,
    uid: e.uid,
    gid: e.gid,
    rdev: 0,
    mtimeSec: BigInt(e.mtime.sec),
    mtimeNsec: e.mtime.nsec,
    payload: null,
    content: null,
    digest: null,
    xattrs: (e.xattrs ?? []).map((x) => ({ key: bytesOf(x.key), value: Buffer.from(x.value, 'base64') })),
  };
  switch (e.type) {
    case 'file':
      d.size = BigInt(e.size);
      if (e.inline !== undefined) d.content = decodeBase64(e.inline, showText(e.path));
      if (e.digest !== undefined) d.digest = e.digest;
      if (e.backing !== undefined) d.payload = bytesOf(e.backing);
      break;
    case 'symlink':
      d.payload = bytesOf(e.target);
      d.size = BigInt(d.payload.length);
      break;
    case 'chardev':
    case 'blockdev':
      d.rdev = e.rdev;
      d.size = BigInt(e.size ?? 0);
      break;
    default:
      d.size = BigInt(e.size ?? 0);
      break;
  }
  return d;
}

/** The dump entries of a (checked) manifest, in its order. */
export function manifestToDump(manifest: Manifest): DumpEntry[] {
  const defaults = defaultLinkCounts(manifest.entries);
  const key = codecFor(manifest.entries).text;
  const byPath = new Map<string, DumpEntry>();
  const out: DumpEntry[] = [];
  const hardlinks: Array<{ index: number; path: ByteText; target: ByteText }> = [];
  for (const e of manifest.entries) {
    if (e.type === 'hardlink') {
      hardlinks.push({ index: out.length, path: e.path, target: e.target });
      out.push(undefined as unknown as DumpEntry); // filled once every target is known
      continue;
    }
    const d = dumpFromEntry(e, defaults.get(key(e.path)) ?? 1);
    byPath.set(key(e.path), d);
    out.push(d);
  }
  for (const h of hardlinks) {
    const target = byPath.get(key(h.target));
    if (!target) throw new InvalidManifestError(`hardlink target "${showText(h.target)}" is not in the manifest`, showText(h.path));
    // As composefs-info writes it: the target's fields, "@" and the target path.
    out[h.index] = { ...target, path: bytesOf(h.path), hardlink: true, payload: bytesOf(h.target) };
  }
  return out;
}

export interface DumpTextOptions extends DumpToManifestOptions {
  /** Default true; lenient accepts what mkcomposefs tolerates (see dump.ts). */
  strict?: boolean;
}

/**
 * Dump text to a checked manifest. A missing final newline is reported last,
 * so a broken dump names its real problem first.
 */
export function manifestFromDumpText(text: Buffer | string, options: DumpTextOptions = {}): Manifest {
  const data = dumpBytes(text);
  const strict = options.strict ?? true;
  const dump = parseDump(data, { strict, allowMissingFinalNewline: true });
  const manifest = dumpToManifest(dump, options);
  if (strict && !endsWithNewline(data)) {
    throw new InvalidManifestError('the last line has no newline (lenient parsing accepts that)', `line ${dump.length}`);
  }
  return manifest;
}
