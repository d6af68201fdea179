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
  MAX_BACKING_BYTES, MAX_ENTRIES, MAX_NAME_BYTES, MAX_PATH_BYTES, MAX_PATH_DEPTH, MAX_SYMLINK_BYTES,
  MAX_XATTR_BUDGET, MAX_XATTR_KEY_BYTES, XATTR_BUDGET_HEADER, xattrBudgetCost,
} from '../manifest/limits.js';
import { normalizeLookupPath, pathProblem } from '../manifest/paths.js';
import { BINARY_TEXT, type TextCodec } from '../manifest/text.js';
import { dumpBytes, endsWithNewline, parseDumpTable, type DumpEntry, type DumpTable } from './dump.js';
import { ENTRY_TYPE_BITS, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK } from './format.js';
import { Kind, type Directory, type Inode, type Stat, type TreeBuilder, type TreeSource } from './tree.js';

type EntryType = keyof typeof ENTRY_TYPE_BITS;

const SLASH = 0x2f;
const DOT = 0x2e;
/** The most xattrs an entry may list (the manifest schema's maxItems). */
const MAX_XATTRS = 4094;

/** The entry type of a dump line that is not a hardlink (a character device 0:0 is a whiteout); undefined for no valid type. */
export function dumpEntryType(d: DumpEntry): EntryType | undefined {
  return entryTypeOf(d.mode, d.rdev);
}

function entryTypeOf(mode: number, rdev: number): EntryType | undefined {
  switch (mode & S_IFMT) {
    case S_IFDIR: return 'dir';
    case S_IFREG: return 'file';
    case S_IFLNK: return 'symlink';
    case S_IFCHR: return rdev === 0 ? 'whiteout' : 'chardev';
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

/** Whether a row's own xattrs pass, with room left for every xattr the image may add. */
function xattrsFit(table: DumpTable, row: number): boolean {
  if (!table.hasXattrs(row)) return true;
  const xattrs = table.xattrs(row);
  if (xattrs.length > MAX_XATTRS) return false;
  let budget = XATTR_BUDGET_HEADER;
  for (const x of xattrs) {
    if (!isText(x.key, MAX_XATTR_KEY_BYTES)) return false;
    budget += xattrBudgetCost(x.key.length, x.value.length);
  }
  return budget <= MAX_XATTR_BUDGET - IMAGE_XATTRS_MAX;
}

/** Whether a row that is not a hardlink needs no second look; its type when so. */
function plainEntryType(table: DumpTable, row: number): EntryType | undefined {
  const type = entryTypeOf(table.mode[row]!, table.rdev[row]!);
  if (type === undefined || table.nlink[row] === 0 || table.mtimeNsec[row]! > 999_999_999) return undefined;
  // Safe integers: the mtime is below 2^53 seconds, and SIZE below MAX_FILE_SIZE (2^53).
  if (!table.hasSafeNumbers(row) || !xattrsFit(table, row)) return undefined;
  if (type === 'symlink' && !isText(table.payload(row), MAX_SYMLINK_BYTES)) return undefined;
  if (type === 'file') {
    const backing = table.payload(row);
    if (backing !== null && !isText(backing, MAX_BACKING_BYTES)) return undefined;
  }
  return type;
}

/** A name as the tree holds it: the bytes after the path's last "/", as a binary string of their own. */
function baseName(path: Buffer): string {
  return path.toString('latin1', path.lastIndexOf(SLASH) + 1);
}

class DumpSource implements TreeSource {
  readonly codec: TextCodec = BINARY_TEXT;
  readonly count: number;
  constructor(
    private readonly table: DumpTable,
    private readonly types: Array<EntryType | undefined>,
    private readonly parents: Int32Array,
    /** The row each hardlink row points to, -1 for the others; null when there are no hardlinks. */
    private readonly targets: Int32Array | null,
  ) {
    this.count = table.count;
  }
  parent(i: number): number {
    return this.parents[i]!;
  }
  name(i: number): string {
    return baseName(this.table.path(i));
  }
  isHardlink(i: number): boolean {
    return this.targets !== null && this.targets[i]! >= 0;
  }
  hardlinkTarget(i: number): number {
    return this.targets![i]!;
  }
  inode(b: TreeBuilder, i: number, name: string, parent: Directory | null): Inode {
    const t = this.table;
    const type = this.types[i]!;
    const stat: Stat = { mode: ENTRY_TYPE_BITS[type] | (t.mode[i]! & 0o7777), uid: t.uid[i]!, gid: t.gid[i]!, mtimeSec: t.mtimeSecNumberOf(i), mtimeNsec: t.mtimeNsec[i]! };
    const size = t.sizeNumberOf(i);
    const isFile = type === 'file';
    const given = isFile ? t.content(i) : null;
    const content = given !== null && given.length > 0 ? given : null;
    const target = type === 'symlink' ? t.payload(i)!.toString('latin1') : '';
    const rdev = type === 'chardev' || type === 'blockdev' ? t.rdev[i]! : 0;
    const inode = b.inode(type, stat, i, name, parent, size, content, target, rdev);
    // A plain file's count is 1 + its hardlinks unless the line says otherwise: the line's count either way.
    inode.nlink = type === 'dir' ? 0 : t.nlink[i]!;
    if (t.hasXattrs(i)) for (const x of t.xattrs(i)) b.ownXattr(inode, b.table.fromBytes(b.table.key(x.key.toString('latin1')), x.value));
    if (inode.kind === Kind.ExternalFile && t.stageDigest(i, b.digests)) {
      // The common shape (a digest; no backing, or its object path) without a string of either.
      const payload = t.payloadAgainstStaged(i, b.digests);
      if (payload !== 2 && b.stagedFileXattrs(inode, payload === 1)) return inode;
    }
    const backing = isFile ? t.payload(i) : null;
    b.addOverlayXattrs(inode, type === 'whiteout', isFile ? (t.digest(i) ?? undefined) : undefined, backing === null ? undefined : backing.toString('latin1'));
    return inode;
  }
}

/**
 * The dump as a tree source, or undefined when the manifest path must look
 * at it (see above). `table` is what parseDumpTable gave; `complete` says
 * that the text ended in a newline or that the parse was lenient. The source
 * keeps the table (its columns and the text) and no object per line: names,
 * targets and xattrs are decoded from the text as the tree takes them.
 */
export function dumpTreeSource(table: DumpTable, complete: boolean): TreeSource | undefined {
  const n = table.count;
  if (!complete || n === 0 || n > MAX_ENTRIES) return undefined;
  const root = table.path(0);
  if (table.hardlink[0] === 1 || root.length !== 1 || root[0] !== SLASH || entryTypeOf(table.mode[0]!, table.rdev[0]!) !== 'dir') return undefined;
  const types: Array<EntryType | undefined> = new Array(n);
  const parents = new Int32Array(n);
  let hardlinks = 0;
  // The directories from the root down to the previous entry: their rows and the lengths of their paths.
  const stackRows: number[] = [];
  const stackLengths: number[] = [];
  let previous: Buffer | null = null;
  for (let i = 0; i < n; i++) {
    const p = table.path(i);
    if (!isCanonicalPath(p)) return undefined;
    if (previous !== null) {
      if (comparePathBytes(previous, p) >= 0) return undefined;
      // The parent is the path up to its last "/": one of the previous entry's ancestors, or the previous entry itself.
      const parentLength = Math.max(1, p.lastIndexOf(SLASH));
      while (stackLengths.length > 0 && !isPrefixDir(previous, stackLengths[stackLengths.length - 1]!, p)) {
        stackLengths.pop();
        stackRows.pop();
      }
      if (stackLengths.length === 0 || stackLengths[stackLengths.length - 1] !== parentLength) return undefined;
      parents[i] = stackRows[stackRows.length - 1]!;
    }
    const hardlink = table.hardlink[i] === 1;
    const type = hardlink ? undefined : plainEntryType(table, i);
    if (!hardlink && type === undefined) return undefined;
    types[i] = type;
    if (type === 'dir') {
      stackRows.push(i);
      stackLengths.push(p.length);
    } else if (hardlink) hardlinks++;
    previous = p;
  }
  const targets = hardlinks > 0 ? hardlinkTargets(table, types) : null;
  if (hardlinks > 0 && targets === undefined) return undefined;
  return new DumpSource(table, types, parents, targets ?? null);
}

/** Whether the directory that is the first `length` bytes of `dir` holds `p` (its path is a prefix up to a "/"). */
function isPrefixDir(dir: Buffer, length: number, p: Buffer): boolean {
  if (length === 1) return true; // the root
  if (p.length <= length || p[length] !== SLASH) return false;
  return dir.compare(p, 0, length, 0, length) === 0;
}

/**
 * The row each hardlink points to (-1 for the rows that are not hardlinks),
 * when every hardlink points at another entry that is there and is neither a
 * directory nor a hardlink; undefined otherwise.
 */
function hardlinkTargets(table: DumpTable, types: Array<EntryType | undefined>): Int32Array | undefined {
  const index = new Map<string, number>();
  for (let i = 0; i < table.count; i++) index.set(table.path(i).toString('latin1'), i);
  const targets = new Int32Array(table.count).fill(-1);
  for (let i = 0; i < table.count; i++) {
    if (table.hardlink[i] !== 1) continue;
    const target = normalizeLookupPath(table.payload(i)!.toString('latin1'));
    if (pathProblem(target) !== undefined || target === table.path(i).toString('latin1')) return undefined;
    const t = index.get(target);
    if (t === undefined) return undefined;
    const type = types[t];
    if (type === undefined || type === 'dir') return undefined;
    targets[i] = t;
  }
  return targets;
}

/**
 * Dump text, parsed (parseDumpTable's refusals are thrown here): its lines as
 * a tree source when dumpTreeSource takes them, or, declined, the parsed lines
 * for the manifest path (manifestFromParsedDump).
 */
export function readDump(text: Buffer | string, strict = true): { source: TreeSource } | { data: Buffer; dump: DumpEntry[] } {
  const data = dumpBytes(text);
  const table = parseDumpTable(data, { strict, allowMissingFinalNewline: true });
  const source = dumpTreeSource(table, !strict || endsWithNewline(data));
  return source ? { source } : { data, dump: table.entries() };
}
