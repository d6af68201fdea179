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
import type { Entry, Manifest } from '../schema/types.generated.js';
import type { CheckedManifest } from '../manifest/check.js';
import { InvalidManifestError } from '../manifest/errors.js';
import { MAX_FILE_SIZE } from '../manifest/limits.js';
import { comparePaths, normalizeLookupPath, parentPath, pathSortKey } from '../manifest/paths.js';
import { byteText, bytesOf, codecFor, showText, type ByteText } from '../manifest/text.js';
import { decodeBase64 } from '../manifest/check.js';
import { validateManifest } from '../manifest/load.js';
import { dumpBytes, endsWithNewline, parseDump, type DumpEntry } from './dump.js';
import { dumpEntryType, readDump } from './dump-tree.js';
import { imageTree, writeTree, type ImageInput, type WriteOptions } from './writer.js';
import { ENTRY_TYPE_BITS } from './format.js';

/** Where a dump line's problem is reported; made only for a message. */
function lineOf(line: number): string {
  return `line ${line}`;
}

function safeNumber(v: bigint, what: string, max: number, line: number): number {
  if (v > BigInt(max)) throw new InvalidManifestError(`${what} ${v} exceeds the maximum ${max}`, lineOf(line));
  return Number(v);
}

type Attributed = Exclude<Entry, { type: 'hardlink' }>;

/** The entry type of a dump line that is not a hardlink. */
function entryType(d: DumpEntry, line: number): Attributed['type'] {
  const type = dumpEntryType(d);
  if (type === undefined) throw new InvalidManifestError(`mode ${d.mode.toString(8)} has no valid file type`, lineOf(line));
  return type;
}

/**
 * The manifest entry of a dump line: path and type first (the order a reader
 * scans for), then the stat, the xattrs and the fields of its type; "size"
 * only where it means something or, where it is informational, is not 0.
 */
function entryFromDump(d: DumpEntry, line: number): Entry {
  const path = byteText(d.path);
  if (d.hardlink) {
    // Normalized on the bytes (only "/" matters to it), as a binary string.
    const target = Buffer.from(normalizeLookupPath(d.payload!.toString('latin1')), 'latin1');
    return { path, type: 'hardlink', target: byteText(target) };
  }
  const type = entryType(d, line);
  if (d.mtimeNsec > 999_999_999) throw new InvalidManifestError(`mtime nanoseconds ${d.mtimeNsec} is not below 1000000000`, lineOf(line));
  const e = {
    path,
    type,
    mode: d.mode & 0o7777,
    uid: d.uid,
    gid: d.gid,
    mtime: { sec: safeNumber(d.mtimeSec, 'mtime seconds', Number.MAX_SAFE_INTEGER, line), nsec: d.mtimeNsec },
  } as Attributed;
  if (d.xattrs.length > 0) e.xattrs = d.xattrs.map((x) => ({ key: byteText(x.key), value: x.value.toString('base64') }));
  switch (e.type) {
    case 'file':
      e.size = safeNumber(d.size, 'file size', MAX_FILE_SIZE, line);
      if (d.digest !== null) e.digest = d.digest;
      if (d.content !== null && d.content.length > 0) e.inline = d.content.toString('base64');
      if (d.payload !== null) e.backing = byteText(d.payload);
      return e;
    case 'symlink':
      e.target = byteText(d.payload!);
      return e;
    case 'chardev':
    case 'blockdev':
      e.rdev = d.rdev;
      break;
    default:
      break;
  }
  if (d.size !== 0n) (e as { size?: number }).size = safeNumber(d.size, 'size', MAX_FILE_SIZE, line);
  return e;
}

/**
 * The link count the format implies for each entry of a sorted manifest: 2 +
 * subdirectories for a directory, 1 + hardlinks pointing at it for anything
 * else (a hardlink entry's own count means nothing).
 */
export function defaultLinkCounts(entries: Entry[]): number[] {
  const codec = codecFor(entries);
  const counts = entries.map((e) => (e.type === 'dir' ? 2 : 1));
  // The directories from the root down to the last one seen: a sorted manifest lists a directory right before its contents.
  const dirPaths: string[] = [];
  const dirIndex: number[] = [];
  let byPath: Map<string, number> | undefined;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    if (e.type === 'hardlink') {
      if (!byPath) {
        byPath = new Map();
        entries.forEach((t, k) => t.type !== 'hardlink' && byPath!.set(codec.text(t.path), k));
      }
      const target = byPath.get(codec.text(e.target));
      if (target !== undefined) counts[target]!++;
      continue;
    }
    if (e.type !== 'dir') continue;
    const path = codec.text(e.path);
    if (path === '/') {
      dirPaths.length = dirIndex.length = 0;
    } else {
      const parent = parentPath(path);
      let top = dirPaths.length - 1;
      while (top >= 0 && dirPaths[top] !== parent) top--;
      dirPaths.length = dirIndex.length = top + 1;
      if (top >= 0) counts[dirIndex[top]!]!++;
    }
    dirPaths.push(path);
    dirIndex.push(i);
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

/** The order of the entries by path, or null when they are in it already (as dumps of an image are). */
function sortOrder(entries: Entry[]): number[] | null {
  let sorted = true;
  for (let i = 1; i < entries.length && sorted; i++) sorted = comparePaths(entries[i - 1]!.path, entries[i]!.path) < 0;
  if (sorted) return null;
  const keys = entries.map((e) => pathSortKey(e.path));
  const order = entries.map((_, i) => i);
  order.sort((a, b) => Buffer.compare(keys[a]!, keys[b]!) || a - b);
  for (let i = 1; i < order.length; i++) {
    if (keys[order[i]!]!.equals(keys[order[i - 1]!]!)) {
      const [first, again] = [order[i - 1]!, order[i]!].sort((a, b) => a - b);
      throw new InvalidManifestError(`path "${showText(entries[again!]!.path)}" appears twice (also on line ${first! + 1})`, lineOf(again! + 1));
    }
  }
  return order;
}

/** Builds a checked manifest from parsed dump entries. */
export function dumpToManifest(dump: DumpEntry[], options: DumpToManifestOptions = {}): CheckedManifest {
  const parsed = dump.map((d, i) => entryFromDump(d, i + 1));
  const order = sortOrder(parsed);
  /** The dump line of each manifest entry. */
  const lineAt = (i: number): number => (order ? order[i]! : i) + 1;
  const entries = order ? order.map((k) => parsed[k]!) : parsed;
  if (entries.some((e) => e.type === 'hardlink')) resolveHardlinkChains(entries, entries.map((_, i) => lineAt(i)));
  const defaults = defaultLinkCounts(entries);
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    const nlink = dump[lineAt(i) - 1]!.nlink;
    if (e.type === 'hardlink' || defaults[i] === nlink) continue;
    if (nlink === 0) throw new InvalidManifestError('nlink is 0', lineOf(lineAt(i)));
    e.nlink = nlink;
  }
  const manifest: Manifest = { version: 1, ...(options.name ? { name: options.name } : {}), entries };
  try {
    return validateManifest(manifest);
  } catch (err) {
    // Name the dump line rather than the position in the sorted manifest.
    if (err instanceof InvalidManifestError) {
      const m = /^\/entries\/(\d+)(.*)$/.exec(err.pointer);
      const index = m ? Number(m[1]) : -1;
      if (m && index < entries.length) {
        throw new InvalidManifestError(`${showText(entries[index]!.path)}${m[2] ? ` (${m[2].slice(1)})` : ''}: ${err.detail}`, lineOf(lineAt(index)));
      }
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
  for (const [i, e] of manifest.entries.entries()) {
    if (e.type === 'hardlink') {
      hardlinks.push({ index: out.length, path: e.path, target: e.target });
      out.push(undefined as unknown as DumpEntry); // filled once every target is known
      continue;
    }
    const d = dumpFromEntry(e, defaults[i]!);
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
export function manifestFromDumpText(text: Buffer | string, options: DumpTextOptions = {}): CheckedManifest {
  const data = dumpBytes(text);
  const strict = options.strict ?? true;
  return manifestFromParsedDump(data, parseDump(data, { strict, allowMissingFinalNewline: true }), options);
}

/** The rest of manifestFromDumpText, for dump text already parsed (with allowMissingFinalNewline). */
export function manifestFromParsedDump(data: Buffer, dump: DumpEntry[], options: DumpTextOptions = {}): CheckedManifest {
  const strict = options.strict ?? true;
  const manifest = dumpToManifest(dump, options);
  if (strict && !endsWithNewline(data)) {
    throw new InvalidManifestError('the last line has no newline (lenient parsing accepts that)', `line ${dump.length}`);
  }
  return manifest;
}

/**
 * What dump text is built from: its lines as a tree source when
 * dumpTreeSource takes them, the checked manifest otherwise (which throws,
 * with the manifest path's words, for a dump it refuses).
 */
export function dumpImageInput(text: Buffer | string, strict = true): ImageInput {
  const read = readDump(text, strict);
  return 'source' in read ? read : { manifest: manifestFromParsedDump(read.data, read.dump, { strict }) };
}

/** The image of dump text, byte for byte the one the manifest path writes, with its refusals. */
export function writeDumpImage(text: Buffer | string, options: WriteOptions & { strict?: boolean } = {}): Buffer {
  return writeTree(imageTree(dumpImageInput(text, options.strict ?? true), options));
}
