// A dump's lines straight to the image's tree, without a manifest in between
// (no Entry objects, no base64 round trip, no schema run per entry): the way
// `image build --from-dump` takes for the dumps that need no second look.
//
// It only ever accepts: a dump it is not sure of, it declines (returns
// undefined), and the caller takes the manifest path (dumpToManifest, then the
// writer), which then accepts or refuses with the words it always used. So
// the checks below are conservative restatements of what that path checks
// (parseDump already ran): a canonical, sorted, unique path under a directory
// that is there; hardlinks to a plain entry that is there; the limits of
// names, paths, targets and xattrs; nothing the converter would refuse or
// rewrite (unsorted lines, hardlink chains, nlink 0, out-of-range numbers).
// An xattr budget within reach of composefs's limit once the image's own
// xattrs are added is declined too, rather than simulated. What it accepts
// builds the same image as the manifest path, byte for byte
// (test/composefs/dump-tree.test.ts checks that on generated and mutated dumps).
// convert.ts puts the two paths together (dumpImageInput, writeDumpImage).
//
// Strings are binary strings of the dump's bytes (BINARY_TEXT): the tree
// orders and writes bytes either way.
import { IMAGE_XATTRS_MAX } from '../manifest/check.js';
import {
  MAX_BACKING_BYTES, MAX_ENTRIES, MAX_FILE_SIZE, MAX_NAME_BYTES, MAX_PATH_BYTES, MAX_PATH_DEPTH, MAX_SYMLINK_BYTES,
  MAX_XATTR_BUDGET, MAX_XATTR_KEY_BYTES, XATTR_BUDGET_HEADER, xattrBudgetCost,
} from '../manifest/limits.js';
import { normalizeLookupPath, pathProblem } from '../manifest/paths.js';
import { BINARY_TEXT, type TextCodec } from '../manifest/text.js';
import { dumpBytes, endsWithNewline, parseDump, type DumpEntry } from './dump.js';
import { ENTRY_TYPE_BITS, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK } from './format.js';
import type { Directory, Inode, Stat, TreeBuilder, TreeSource } from './tree.js';

type EntryType = keyof typeof ENTRY_TYPE_BITS;

const SLASH = 0x2f;
const DOT = 0x2e;
/** The most xattrs an entry may list (the manifest schema's maxItems). */
const MAX_XATTRS = 4094;
const MAX_SAFE_SECONDS = BigInt(Number.MAX_SAFE_INTEGER);
const MAX_SIZE = BigInt(MAX_FILE_SIZE);

/** The entry type of a dump line that is not a hardlink (a character device 0:0 is a whiteout); undefined for no valid type. */
export function dumpEntryType(d: DumpEntry): EntryType | undefined {
  switch (d.mode & S_IFMT) {
    case S_IFDIR: return 'dir';
    case S_IFREG: return 'file';
    case S_IFLNK: return 'symlink';
    case S_IFCHR: return d.rdev === 0 ? 'whiteout' : 'chardev';
    case S_IFBLK: return 'blockdev';
    case S_IFIFO: return 'fifo';
    case S_IFSOCK: return 'socket';
    default: return undefined;
  }
}

/** Order of two paths' bytes with "/" lowest (the manifest's order); negative when a comes first. */
function comparePathBytes(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x !== y) return (x === SLASH ? -1 : x) - (y === SLASH ? -1 : y);
  }
  return a.length - b.length;
}

/** Whether a path is canonical and within the limits: "/", or "/name/..." with names of 1..255 bytes, none "." or "..", no NUL. */
function isCanonicalPath(p: Buffer): boolean {
  if (p.length === 0 || p[0] !== SLASH || p.length > MAX_PATH_BYTES) return false;
  if (p.length === 1) return true;
  let depth = 0;
  let start = 1;
  for (let i = 1; i <= p.length; i++) {
    if (i < p.length && p[i] !== SLASH) {
      if (p[i] === 0) return false;
      continue;
    }
    const len = i - start;
    if (len === 0 || len > MAX_NAME_BYTES) return false;
    if (p[start] === DOT && (len === 1 || (len === 2 && p[start + 1] === DOT))) return false;
    if (++depth > MAX_PATH_DEPTH) return false;
    start = i + 1;
  }
  return true;
}

/** Text the manifest checks for a NUL and a length of 1..max bytes. */
function isText(b: Buffer | null, max: number): b is Buffer {
  return b !== null && b.length > 0 && b.length <= max && !b.includes(0);
}

/** Whether an entry's own xattrs pass, with room left for every xattr the image may add. */
function xattrsFit(d: DumpEntry): boolean {
  const xattrs = d.xattrs;
  if (xattrs.length === 0) return true;
  if (xattrs.length > MAX_XATTRS) return false;
  let budget = XATTR_BUDGET_HEADER;
  for (const x of xattrs) {
    if (!isText(x.key, MAX_XATTR_KEY_BYTES)) return false;
    budget += xattrBudgetCost(x.key.length, x.value.length);
  }
  return budget <= MAX_XATTR_BUDGET - IMAGE_XATTRS_MAX;
}

/** Whether a line that is not a hardlink needs no second look; its type when so. */
function plainEntryType(d: DumpEntry): EntryType | undefined {
  const type = dumpEntryType(d);
  if (type === undefined || d.nlink === 0 || d.mtimeNsec > 999_999_999) return undefined;
  if (d.mtimeSec < 0n || d.mtimeSec > MAX_SAFE_SECONDS || d.size > MAX_SIZE || !xattrsFit(d)) return undefined;
  if (type === 'symlink' && !isText(d.payload, MAX_SYMLINK_BYTES)) return undefined;
  if (type === 'file' && d.payload !== null && !isText(d.payload, MAX_BACKING_BYTES)) return undefined;
  return type;
}

class DumpSource implements TreeSource {
  readonly codec: TextCodec = BINARY_TEXT;
  readonly count: number;
  constructor(
    private readonly dump: Array<DumpEntry | null>,
    private readonly paths: string[],
    private readonly types: Array<EntryType | undefined>,
    private readonly targets: Map<number, string>,
  ) {
    this.count = dump.length;
  }
  hasWhiteouts(): boolean {
    return this.types.includes('whiteout');
  }
  path(i: number): string {
    return this.paths[i]!;
  }
  hardlinkTarget(i: number): string | undefined {
    return this.types[i] === undefined ? this.targets.get(i) : undefined;
  }
  inode(b: TreeBuilder, i: number, name: string, parent: Directory | null): Inode {
    const d = this.dump[i]!;
    this.dump[i] = null; // each line is read once: what the inode does not keep can go while the tree grows
    const type = this.types[i]!;
    const stat: Stat = { mode: ENTRY_TYPE_BITS[type] | (d.mode & 0o7777), uid: d.uid, gid: d.gid, mtimeSec: Number(d.mtimeSec), mtimeNsec: d.mtimeNsec };
    const size = Number(d.size);
    const isFile = type === 'file';
    const content = isFile && d.content !== null && d.content.length > 0 ? d.content : null;
    const target = type === 'symlink' ? d.payload!.toString('latin1') : '';
    const rdev = type === 'chardev' || type === 'blockdev' ? d.rdev : 0;
    const inode = b.inode(type, stat, i, name, parent, size, content, target, rdev);
    // A plain file's count is 1 + its hardlinks unless the line says otherwise: the line's count either way.
    inode.nlink = type === 'dir' ? 0 : d.nlink;
    for (const x of d.xattrs) b.ownXattr(inode, b.table.fromBytes(b.table.key(x.key.toString('latin1')), x.value));
    const backing = isFile && d.payload !== null ? d.payload.toString('latin1') : undefined;
    b.addOverlayXattrs(inode, type === 'whiteout', isFile ? (d.digest ?? undefined) : undefined, backing);
    return inode;
  }
}

/**
 * The dump as a tree source, or undefined when the manifest path must look
 * at it (see above). `dump` is what parseDump gave; `complete` says that the
 * text ended in a newline or that the parse was lenient. A source takes the
 * lines over: building its tree empties `dump`, line by line, so a large
 * dump's lines are let go as the tree takes their place.
 */
export function dumpTreeSource(dump: DumpEntry[], complete: boolean): TreeSource | undefined {
  const n = dump.length;
  if (!complete || n === 0 || n > MAX_ENTRIES) return undefined;
  const root = dump[0]!;
  if (root.hardlink || root.path.length !== 1 || root.path[0] !== SLASH || dumpEntryType(root) !== 'dir') return undefined;
  const paths: string[] = new Array(n);
  const types: Array<EntryType | undefined> = new Array(n);
  const targets = new Map<number, string>();
  // The directories from the root down to the previous entry (lengths of their paths), and whether the previous entry is one.
  const stack: number[] = [];
  let previous: Buffer | null = null;
  for (let i = 0; i < n; i++) {
    const d = dump[i]!;
    const p = d.path;
    if (!isCanonicalPath(p)) return undefined;
    if (previous !== null) {
      if (comparePathBytes(previous, p) >= 0) return undefined;
      // The parent is the path up to its last "/": one of the previous entry's ancestors, or the previous entry itself.
      const parentLength = Math.max(1, p.lastIndexOf(SLASH));
      while (stack.length > 0 && !isPrefixDir(previous, stack[stack.length - 1]!, p)) stack.pop();
      if (stack.length === 0 || stack[stack.length - 1] !== parentLength) return undefined;
    }
    const type = d.hardlink ? undefined : plainEntryType(d);
    if (!d.hardlink && type === undefined) return undefined;
    types[i] = type;
    paths[i] = p.toString('latin1');
    if (type === 'dir') stack.push(p.length);
    else if (d.hardlink) targets.set(i, normalizeLookupPath(d.payload!.toString('latin1')));
    previous = p;
  }
  if (targets.size > 0 && !hardlinksPlain(paths, types, targets)) return undefined;
  return new DumpSource(dump, paths, types, targets);
}

/** Whether the directory that is the first `length` bytes of `dir` holds `p` (its path is a prefix up to a "/"). */
function isPrefixDir(dir: Buffer, length: number, p: Buffer): boolean {
  if (length === 1) return true; // the root
  if (p.length <= length || p[length] !== SLASH) return false;
  return dir.compare(p, 0, length, 0, length) === 0;
}

/** Every hardlink points at another entry that is there and is neither a directory nor a hardlink. */
function hardlinksPlain(paths: string[], types: Array<EntryType | undefined>, targets: Map<number, string>): boolean {
  const index = new Map<string, number>();
  for (let i = 0; i < paths.length; i++) index.set(paths[i]!, i);
  for (const [i, target] of targets) {
    if (pathProblem(target) !== undefined || target === paths[i]) return false;
    const t = index.get(target);
    if (t === undefined) return false;
    const type = types[t];
    if (type === undefined || type === 'dir') return false;
  }
  return true;
}

/**
 * Dump text, parsed (parseDump's refusals are thrown here): its lines as a
 * tree source when dumpTreeSource takes them, or, declined, the parsed lines
 * for the manifest path (manifestFromParsedDump).
 */
export function readDump(text: Buffer | string, strict = true): { source: TreeSource } | { data: Buffer; dump: DumpEntry[] } {
  const data = dumpBytes(text);
  const dump = parseDump(data, { strict, allowMissingFinalNewline: true });
  const source = dumpTreeSource(dump, !strict || endsWithNewline(data));
  return source ? { source } : { data, dump };
}
