// The tree a composefs image holds, as the writer lays it out: one typed
// inode per file (a directory with its entries, a regular file inline or
// external, a symlink, a device, a fifo or socket), each with its stat and
// its final xattrs, built once from a checked manifest. Building applies what
// mkcomposefs applies: the overlay xattrs (metacopy digest, redirect, escaped
// whiteouts, opaque marks, escaped user trusted.overlay.* keys), "." and ".."
// in every directory, the 256 whiteouts "00".."ff" in the root that hide the
// object store's fan-out directories, breadth-first inode numbers, xattrs in
// key order and the shared ones chosen. Nothing here knows an offset: where
// things land on disk is the layout's business (writer.ts).
//
// Names, symlink targets and backing paths stay the manifest's own strings
// (or, when one of them is given as {"base64"}, binary strings of their bytes:
// manifest/text.ts), so building copies no text.
import type { Entry, Manifest } from '../schema/types.generated.js';
import { InvalidManifestError } from '../manifest/errors.js';
import { MAX_XATTR_BUDGET, XATTR_BUDGET_HEADER, xattrBudgetCost } from '../manifest/limits.js';
import { comparePaths } from '../manifest/paths.js';
import { codecFor, type TextCodec } from '../manifest/text.js';
import { DigestPool } from './digests.js';
import {
  COMPOSEFS_MAX_CHUNKS, ENTRY_TYPE_BITS, EROFS_BLOCK_BITS, EROFS_CHUNK_FORMAT_BLKBITS_MASK, EROFS_XATTR_HEADER_SIZE,
  EROFS_XATTR_MAX_SHARED, S_IFCHR, S_IFMT, S_IFREG,
} from './format.js';
import {
  OverlayXattrs, XattrTable, isObjectPathOf, isOverlayKey, isOwnValue, objectIdentity, roundUp, xattrValueBytes, type Xattr,
} from './xattrs.js';

/** What an inode is; its content follows from it. */
export const enum Kind {
  Directory,
  /** A regular file whose bytes are in the image (or that is empty). */
  InlineFile,
  /** A regular file whose bytes are in the object store: chunk pointers, metacopy and redirect xattrs. */
  ExternalFile,
  Symlink,
  /** A character or block device (rdev), a fifo or a socket. */
  Special,
}

const NO_XATTRS: readonly Xattr[] = Object.freeze([]);

/** What every inode has. */
abstract class InodeBase {
  abstract readonly kind: Kind;
  /** st_mode, type bits included. */
  mode: number;
  uid: number;
  gid: number;
  nlink = 1;
  mtimeSec: number;
  mtimeNsec: number;
  /** Sorted by key once the tree is final. */
  xattrs: Xattr[] = NO_XATTRS as Xattr[];
  /** Xattr bytes as composefs budgets them (it does not recount renamed keys). */
  xattrBudget = 0;
  /** The name its parent lists it under (a string of the image's codec); "" for the root. */
  name: string;
  parent: Directory;
  /** Breadth-first position: the inode number, and its index in the layout. */
  ino = -1;
  /** The manifest entry it comes from, for messages. */
  readonly source: number;

  constructor(stat: Stat, name: string, parent: Directory | null, source: number) {
    this.mode = stat.mode;
    this.uid = stat.uid;
    this.gid = stat.gid;
    this.mtimeSec = stat.mtimeSec;
    this.mtimeNsec = stat.mtimeNsec;
    this.name = name;
    this.parent = parent ?? (this as unknown as Directory);
    this.source = source;
  }

  get pointer(): string {
    return `/entries/${this.source}`;
  }
}

export interface Stat {
  mode: number;
  uid: number;
  gid: number;
  mtimeSec: number;
  mtimeNsec: number;
}

/** ".", ".." and hardlinks: a name for an inode that lives elsewhere in the tree. */
export class Link {
  readonly kind = -1;
  constructor(readonly name: string, public target: Inode) {}
}

export class Directory extends InodeBase {
  readonly kind = Kind.Directory;
  /** Sorted by name in byte order once the tree is final. */
  readonly entries: Array<Inode | Link> = [];
}

export class InlineFile extends InodeBase {
  readonly kind = Kind.InlineFile;
  constructor(stat: Stat, name: string, parent: Directory, source: number, readonly content: Buffer | null) {
    super(stat, name, parent, source);
  }
  get size(): number {
    return this.content === null ? 0 : this.content.length;
  }
}

export class ExternalFile extends InodeBase {
  readonly kind = Kind.ExternalFile;
  /**
   * Its digest's id in the tree's pool (ImageTree.digests) when it carries its
   * metacopy, and redirect, as its own (xattrs.ts, VALUE_OWN_METACOPY); else -1.
   */
  digest = -1;
  /** log2 of the chunk size: as few chunks as possible, each at least a block and at most 2^(12+31). */
  readonly chunkBits: number;
  readonly chunkCount: number;
  constructor(stat: Stat, name: string, parent: Directory, source: number, readonly size: number) {
    super(stat, name, parent, source);
    const bitsNeeded = size <= 1 ? 1 : bitLength(size - 1);
    this.chunkBits = Math.min(Math.max(bitsNeeded, EROFS_BLOCK_BITS), EROFS_BLOCK_BITS + EROFS_CHUNK_FORMAT_BLKBITS_MASK);
    this.chunkCount = Math.ceil(size / 2 ** this.chunkBits);
  }
}

export class Symlink extends InodeBase {
  readonly kind = Kind.Symlink;
  constructor(stat: Stat, name: string, parent: Directory, source: number, readonly target: string, readonly size: number) {
    super(stat, name, parent, source);
  }
}

export class Special extends InodeBase {
  readonly kind = Kind.Special;
  /** st_size is stored as 0, but decides, as in mkcomposefs, whether a compact inode fits. */
  constructor(stat: Stat, name: string, parent: Directory, source: number, readonly rdev: number, readonly size: number) {
    super(stat, name, parent, source);
  }
}

export type Inode = Directory | InlineFile | ExternalFile | Symlink | Special;

/** The tree, final: what the layout needs and nothing it decides. */
export interface ImageTree {
  /** Breadth-first: inodes[i].ino === i; inodes[0] is the root. */
  inodes: Inode[];
  /** How names and payloads are held: written as their bytes. */
  codec: TextCodec;
  /** Format version (1 marks directories holding whiteouts as opaque). */
  version: number;
  hasAcl: boolean;
  /** The oldest mtime: the build time, which compact inodes take. */
  minMtimeSec: number;
  minMtimeNsec: number;
  /** The xattrs more than one inode carries, in their on-disk order, each with its sharedOffset. */
  sharedXattrs: Xattr[];
  /** The digests the files that carry their own metacopy have (ExternalFile.digest). */
  digests: DigestPool<ExternalFile | null>;
}

function bitLength(n: number): number {
  return n >= 2 ** 32 ? 32 + bitLength(Math.floor(n / 2 ** 32)) : 32 - Math.clz32(n);
}

function addXattr(inode: Inode, x: Xattr): void {
  if (inode.xattrs === NO_XATTRS) inode.xattrs = [];
  inode.xattrs.push(x);
}

/** Sets or replaces an xattr, under the per-inode budget composefs applies. */
function setXattr(inode: Inode, x: Xattr): void {
  const xattrs = inode.xattrs;
  for (let i = 0; i < xattrs.length; i++) {
    const old = xattrs[i]!;
    if (old.key !== x.key) continue;
    xattrs.splice(i, 1);
    inode.xattrBudget = xattrs.length === 0 ? 0 : inode.xattrBudget - xattrBudgetCost(old.key.bytes.length, old.valueSize);
    break;
  }
  const cost = xattrBudgetCost(x.key.bytes.length, x.valueSize) + (inode.xattrs.length === 0 ? XATTR_BUDGET_HEADER : 0);
  if (inode.xattrBudget + cost > MAX_XATTR_BUDGET) {
    throw new InvalidManifestError(
      `no room for the ${x.key.codec.show(x.key.text)} xattr the image needs: the xattrs would take ${inode.xattrBudget + cost} bytes, at most ${MAX_XATTR_BUDGET}`,
      inode.pointer,
    );
  }
  addXattr(inode, x);
  inode.xattrBudget += cost;
}

/** Inserts an entry in byte order of names, unless one of that name exists. */
function insertIfAbsent(dir: Directory, entry: Inode | Link): void {
  const entries = dir.entries;
  let lo = 0;
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const order = comparePaths(entries[mid]!.name, entry.name); // names hold no "/": byte order
    if (order === 0) return;
    if (order < 0) lo = mid + 1;
    else hi = mid;
  }
  entries.splice(lo, 0, entry);
}

export type Attributed = Exclude<Entry, { type: 'hardlink' }>;

/** Builds the tree from a source's entries, in manifest order (depth first, siblings sorted). */
export class TreeBuilder {
  readonly table: XattrTable;
  readonly overlay: OverlayXattrs;
  /**
   * The format version: the lowest of the range, or 1 (which marks the
   * directories holding whiteouts as opaque) from the first whiteout on, when
   * the range allows it. Only a whiteout's marks depend on it, so deciding it
   * at the first one is deciding it for the whole tree, without a look ahead.
   */
  version: number;
  /** Every inode in manifest order: the depth-first order mkcomposefs rewrites in. */
  readonly inodes: Inode[] = [];
  /**
   * Every digest of a metacopy or object redirect seen, each with the one file
   * that carries it as its own, or null once the table holds its records (a
   * second file with those digits made them: they are shared).
   */
  readonly digests = new DigestPool<ExternalFile | null>();
  /** The xattrs of a file that has none but its own metacopy (and redirect): one array for all of them. */
  private readonly ownOnly: readonly Xattr[];
  private readonly ownOnlyWithRedirect: readonly Xattr[];

  constructor(readonly codec: TextCodec, minVersion: number, private readonly maxVersion: number) {
    this.table = new XattrTable(codec);
    this.overlay = new OverlayXattrs(this.table);
    this.version = minVersion;
    // In key order ("trusted.overlay.metacopy" before "trusted.overlay.redirect"): sorting leaves them as they are.
    this.ownOnly = Object.freeze([this.overlay.ownMetacopy]);
    this.ownOnlyWithRedirect = Object.freeze([this.overlay.ownMetacopy, this.overlay.ownRedirect]);
  }

  /**
   * A new inode (nlink 0: 1 + incoming hardlinks, counted later, unless the
   * caller sets it): `size` is a file's or device's st_size, `content` an
   * inline file's bytes (null: none), `target` a symlink's (a string of the codec).
   */
  inode(type: Attributed['type'], stat: Stat, index: number, name: string, parent: Directory | null, size: number, content: Buffer | null, target: string, rdev: number): Inode {
    const at = parent!;
    switch (type) {
      case 'dir':
        return new Directory(stat, name, parent, index);
      case 'file': {
        if (size === 0 || content !== null) return new InlineFile(stat, name, at, index, size > 0 ? content : null);
        const inode = new ExternalFile(stat, name, at, index, size);
        if (inode.chunkCount > COMPOSEFS_MAX_CHUNKS) throw new InvalidManifestError(`file size ${size} is too large for composefs`, inode.pointer);
        return inode;
      }
      case 'symlink':
        return new Symlink(stat, name, at, index, target, this.codec.length(target));
      case 'chardev':
      case 'blockdev':
        return new Special(stat, name, at, index, rdev, size);
      case 'whiteout':
        // An overlay whiteout inside the image would act on the image's own
        // layer; stored escaped (an empty file with the marks), overlayfs
        // presents it to the upper mount.
        if (this.version < 1 && this.maxVersion >= 1) this.version = 1;
        stat.mode = S_IFREG | (stat.mode & ~S_IFMT);
        return new InlineFile(stat, name, at, index, null);
      default:
        return new Special(stat, name, at, index, 0, size);
    }
  }

  /** One of the inode's own xattrs, interned, counted in its budget as composefs counts it. */
  ownXattr(inode: Inode, x: Xattr): void {
    inode.xattrBudget += xattrBudgetCost(x.key.bytes.length, x.valueSize) + (inode.xattrs.length === 0 ? XATTR_BUDGET_HEADER : 0);
    addXattr(inode, x);
  }

  /**
   * The metacopy and redirect of a file whose digest no file has had yet, in
   * the common shape (a lowercase digest; no backing, or the object path of
   * the digest), kept as its own: no record, no table entry. Returns false
   * for any other file, which takes records from the table; so does the first
   * file of a digest once a second one comes.
   */
  private ownFileXattrs(inode: ExternalFile, digest: string | undefined, backing: string | undefined): boolean {
    const digests = this.digests;
    if (digest === undefined || !digests.stageString(digest) || (backing !== undefined && !isObjectPathOf(backing, digest))) return false;
    const seen = digests.findStaged();
    if (seen >= 0) {
      this.intoTable(seen);
      return false;
    }
    this.takeOwnXattrs(inode, backing !== undefined);
    return true;
  }

  /**
   * addOverlayXattrs for an external file whose digest its source has staged
   * in `digests` (lowercase or not) and whose backing is none (`withRedirect`
   * false) or the object path of that digest, in lowercase: the file's own
   * metacopy and redirect without a string of either. False, with nothing
   * done, when a file has had the digest already: then addOverlayXattrs.
   */
  stagedFileXattrs(inode: ExternalFile, withRedirect: boolean): boolean {
    if (this.digests.findStaged() >= 0) return false;
    escapeOverlayKeys(this.overlay, inode);
    this.takeOwnXattrs(inode, withRedirect);
    return true;
  }

  /** The staged digest, which no file has had, is the file's own from now on. */
  private takeOwnXattrs(inode: ExternalFile, withRedirect: boolean): void {
    inode.digest = this.digests.addStaged(inode);
    if (inode.xattrs.length === 0) {
      // What setXattr would count, without an array of its own.
      inode.xattrs = (withRedirect ? this.ownOnlyWithRedirect : this.ownOnly) as Xattr[];
      inode.xattrBudget = XATTR_BUDGET_HEADER;
      for (const x of inode.xattrs) inode.xattrBudget += xattrBudgetCost(x.key.bytes.length, x.valueSize);
      return;
    }
    setXattr(inode, this.overlay.ownMetacopy);
    if (withRedirect) setXattr(inode, this.overlay.ownRedirect);
    inode.xattrs = inode.xattrs.slice(); // exact size, as below
  }

  /** The 64 digits are in the table from now on (see intoTable). */
  private digitsIntoTable(digits: string): void {
    const digests = this.digests;
    if (!digests.stageString(digits)) return; // (a metacopy without digest: no file carries that as its own)
    const seen = digests.findStaged();
    if (seen < 0) digests.addStaged(null);
    else this.intoTable(seen);
  }

  /** Digest `id` is in the table from now on: the file that had it as its own takes its records from it. */
  private intoTable(id: number): void {
    const owner = this.digests.value(id);
    if (owner === null) return;
    this.digests.setValue(id, null);
    const overlay = this.overlay;
    const digits = this.digests.hex(id);
    const hadRedirect = owner.xattrs.includes(overlay.ownRedirect);
    owner.xattrs = owner.xattrs.slice();
    const metacopy = this.table.metacopy(overlay.metacopyKey, digits);
    setXattr(owner, metacopy);
    if (hadRedirect) setXattr(owner, this.table.objectRedirect(overlay.redirectKey, digits));
    owner.digest = -1;
  }

  /**
   * The overlayfs view of one inode, in depth-first order: its parent's marks
   * come after the parent's own. `digest` and `backing` (a string of the
   * codec) are an external file's.
   */
  addOverlayXattrs(inode: Inode, whiteout: boolean, digest: string | undefined, backing: string | undefined): void {
    const overlay = this.overlay;
    escapeOverlayKeys(overlay, inode);
    if (inode.kind === Kind.ExternalFile) {
      if (this.ownFileXattrs(inode, digest, backing)) return;
      const metacopy = this.table.metacopy(overlay.metacopyKey, digest);
      setXattr(inode, metacopy);
      if (backing !== undefined) setXattr(inode, this.table.redirect(overlay.redirectKey, backing, metacopy));
      // Its digits are in the table now: a file that carries them as its own shares them from here on.
      this.digitsIntoTable(metacopy.identity);
      if (backing !== undefined) {
        const redirect = objectIdentity(backing, metacopy.identity);
        if (redirect !== undefined) this.digitsIntoTable(redirect);
      }
    } else if (whiteout) {
      setXattr(inode, overlay.escapedWhiteout);
      setXattr(inode, overlay.userWhiteout);
      setXattr(inode.parent, overlay.escapedWhiteouts);
      setXattr(inode.parent, overlay.userWhiteouts);
      if (this.version >= 1) {
        setXattr(inode.parent, overlay.escapedOpaque);
        setXattr(inode.parent, overlay.userOpaque);
      }
    }
    // An array grown by push keeps room for 16 more items; an inode has a few,
    // and a tree has as many such arrays as files: keep an exact copy.
    if (inode.xattrs.length > 0) inode.xattrs = inode.xattrs.slice();
  }
}

/** A user's trusted.overlay.* xattrs renamed in place (composefs keeps the budget of the old name). */
function escapeOverlayKeys(overlay: OverlayXattrs, inode: Inode): void {
  const xattrs = inode.xattrs;
  for (let i = 0; i < xattrs.length; i++) if (isOverlayKey(xattrs[i]!.key)) xattrs[i] = overlay.escaped(xattrs[i]!);
}

/**
 * What a tree is built from, entry by entry in manifest order (sorted by
 * path, each directory before its contents, every check passed): a manifest
 * (below), or the lines of a dump (dump-tree.ts).
 */
export interface TreeSource {
  /** How the source's strings hold bytes; every string it gives is of this codec. */
  readonly codec: TextCodec;
  readonly count: number;
  /** The entry the directory holding entry i (i > 0) comes from. */
  parent(i: number): number;
  /** The name of entry i in its directory (a string of the codec). */
  name(i: number): string;
  isHardlink(i: number): boolean;
  /**
   * The entry a hardlink entry points to (never a directory nor a hardlink):
   * asked once every entry is in the tree, as a hardlink may come before its target.
   */
  hardlinkTarget(i: number): number;
  /** The inode of entry i (not a hardlink), with its own xattrs and then its overlay xattrs. */
  inode(b: TreeBuilder, i: number, name: string, parent: Directory | null): Inode;
}

/** A checked manifest as a tree source. */
class ManifestSource implements TreeSource {
  readonly codec: TextCodec;
  readonly count: number;
  private readonly parents: Int32Array;
  private readonly targets: Map<number, number>;
  private readonly entries: Array<Entry | undefined>;
  /**
   * `consume`: the caller gives the entries up, and each is let go once its
   * inode is made (the array is the manifest's own), so that the tree does not
   * also hold the whole manifest while it is built.
   */
  constructor(entries: Entry[], private readonly consume: boolean) {
    this.entries = entries;
    this.codec = codecFor(entries);
    this.count = entries.length;
    const paths: string[] = entries.map((e) => this.codec.text(e.path));
    this.parents = parentEntries(paths, (i) => entries[i]!.type === 'dir');
    this.targets = entries.some((e) => e.type === 'hardlink') ? this.hardlinkEntries(paths) : new Map();
  }
  /** The entry each hardlink points to, by the hardlink's index (the check made sure that it is there). */
  private hardlinkEntries(paths: readonly string[]): Map<number, number> {
    const byPath = new Map<string, number>();
    for (let i = 0; i < paths.length; i++) byPath.set(paths[i]!, i);
    const targets = new Map<number, number>();
    this.entries.forEach((e, i) => {
      if (e!.type === 'hardlink') targets.set(i, byPath.get(this.codec.text(e!.target))!);
    });
    return targets;
  }
  parent(i: number): number {
    return this.parents[i]!;
  }
  name(i: number): string {
    const e = this.entries[i]!;
    const path = this.codec.text(e.path);
    if (this.consume && e.type === 'hardlink') this.entries[i] = undefined; // the last use of a hardlink entry
    return ownString(path.slice(path.lastIndexOf('/') + 1));
  }
  isHardlink(i: number): boolean {
    return this.targets.has(i);
  }
  hardlinkTarget(i: number): number {
    return this.targets.get(i)!;
  }
  inode(b: TreeBuilder, i: number, name: string, parent: Directory | null): Inode {
    const inode = entryInode(b, this.entries[i] as Attributed, i, name, parent);
    if (this.consume) this.entries[i] = undefined;
    return inode;
  }
}

/** The inode of checked manifest entry i (not a hardlink), with its own xattrs and then its overlay xattrs. */
export function entryInode(b: TreeBuilder, e: Attributed, i: number, name: string, parent: Directory | null): Inode {
  const stat: Stat = { mode: ENTRY_TYPE_BITS[e.type] | e.mode, uid: e.uid, gid: e.gid, mtimeSec: e.mtime.sec, mtimeNsec: e.mtime.nsec };
  const codec = b.codec;
  let inode: Inode;
  switch (e.type) {
    case 'file':
      inode = b.inode('file', stat, i, name, parent, e.size, e.inline !== undefined && e.size > 0 ? Buffer.from(e.inline, 'base64') : null, '', 0);
      break;
    case 'symlink':
      inode = b.inode('symlink', stat, i, name, parent, 0, null, codec.text(e.target), 0);
      break;
    case 'chardev':
    case 'blockdev':
      inode = b.inode(e.type, stat, i, name, parent, e.size ?? 0, null, '', e.rdev);
      break;
    default:
      inode = b.inode(e.type, stat, i, name, parent, e.size ?? 0, null, '', 0);
  }
  inode.nlink = e.nlink ?? 0;
  if (e.xattrs) for (const given of e.xattrs) b.ownXattr(inode, b.table.fromBase64(b.table.key(codec.text(given.key)), given.value));
  const file = e.type === 'file' ? e : undefined;
  b.addOverlayXattrs(inode, e.type === 'whiteout', file?.digest, file?.backing === undefined ? undefined : codec.text(file.backing));
  return inode;
}

/**
 * A string that does not hold on to the one it was cut from: V8 makes a
 * slice of 13 characters or more a view of the whole (a name, of its path), so
 * every path would live as long as the tree. Concatenating and slicing again
 * copies it once, into a string of its own.
 */
export function ownString(s: string): string {
  return s.length < 13 ? s : ` ${s}`.slice(1);
}

/**
 * For each path of a sorted list (each directory before its contents, the
 * root first), the index of the directory that holds it: the nearest of the
 * directories from the root down to the previous entry whose path is the
 * part before the last "/".
 */
function parentEntries(paths: readonly string[], isDir: (i: number) => boolean): Int32Array {
  const parents = new Int32Array(paths.length);
  const dirPaths: string[] = ['/'];
  const dirs: number[] = [0];
  for (let i = 1; i < paths.length; i++) {
    const path = paths[i]!;
    const cut = path.lastIndexOf('/');
    const parentLength = cut === 0 ? 1 : cut;
    let top = dirPaths.length - 1;
    while (!(dirPaths[top]!.length === parentLength && path.startsWith(dirPaths[top]!))) top--;
    dirPaths.length = top + 1;
    dirs.length = top + 1;
    parents[i] = dirs[top]!;
    if (isDir(i)) {
      dirPaths.push(path);
      dirs.push(i);
    }
  }
  return parents;
}

/** Builds the inodes and links of a source, and counts incoming hardlinks. */
function buildInodes(source: TreeSource, b: TreeBuilder): Directory {
  const root = source.inode(b, 0, '', null) as Directory;
  b.inodes.push(root);
  // Each entry's inode, looked up by the entries it holds and the hardlinks to it.
  const inodeOfEntry: Array<Inode | undefined> = new Array(source.count);
  inodeOfEntry[0] = root;
  const links: Link[] = [];
  const linkEntries: number[] = [];
  for (let i = 1; i < source.count; i++) {
    const parent = inodeOfEntry[source.parent(i)] as Directory;
    const name = source.name(i);
    if (source.isHardlink(i)) {
      const link = new Link(name, root);
      parent.entries.push(link);
      links.push(link);
      linkEntries.push(i);
      continue;
    }
    const inode = source.inode(b, i, name, parent);
    parent.entries.push(inode);
    b.inodes.push(inode);
    inodeOfEntry[i] = inode;
  }
  const incoming = new Map<Inode, number>();
  for (let k = 0; k < links.length; k++) {
    const target = inodeOfEntry[source.hardlinkTarget(linkEntries[k]!)]!;
    links[k]!.target = target;
    incoming.set(target, (incoming.get(target) ?? 0) + 1);
  }
  for (const n of b.inodes) if (n.nlink === 0) n.nlink = 1 + (incoming.get(n) ?? 0);
  return root;
}

const HEX_DIGITS = '0123456789abcdef';

/** The character devices 0:0 named 00..ff that hide the object store's fan-out. */
function addRootWhiteouts(root: Directory): void {
  const selinux = root.xattrs.find((x) => x.key.text === 'security.selinux');
  const stat: Stat = { mode: S_IFCHR | 0o644, uid: root.uid, gid: root.gid, mtimeSec: root.mtimeSec, mtimeNsec: root.mtimeNsec };
  for (let i = 0; i <= 255; i++) {
    const w = new Special(stat, HEX_DIGITS[i >> 4]! + HEX_DIGITS[i & 15]!, root, root.source, 0, 0);
    const before = root.entries.length;
    insertIfAbsent(root, w);
    if (selinux && root.entries.length > before) setXattr(w, selinux);
  }
}

/** Ranks the keys in byte order, so that sorting xattrs compares small integers. */
function rankKeys(table: XattrTable): void {
  const keys = [...table.keys].sort((a, b) => Buffer.compare(a.bytes, b.bytes));
  keys.forEach((k, i) => (k.rank = i));
}

/** Sorts one inode's few xattrs by key (insertion sort: stable, and usually 0 to 3 items). */
function sortXattrs(xattrs: Xattr[]): void {
  for (let i = 1; i < xattrs.length; i++) {
    const x = xattrs[i]!;
    let j = i - 1;
    while (j >= 0 && xattrs[j]!.key.rank > x.key.rank) {
      xattrs[j + 1] = xattrs[j]!;
      j--;
    }
    if (j + 1 !== i) xattrs[j + 1] = x; // (an array in order is not written: a file's own pair is one frozen array)
  }
}

/** Breadth-first numbering, directory link counts, canonical xattr order, ACL flag, oldest mtime. */
function numberInodes(root: Directory): Pick<ImageTree, 'inodes' | 'hasAcl' | 'minMtimeSec' | 'minMtimeNsec'> {
  const inodes: Inode[] = [root];
  let minSec = root.mtimeSec;
  let minNsec = root.mtimeNsec;
  let hasAcl = false;
  for (let i = 0; i < inodes.length; i++) {
    const inode = inodes[i]!;
    inode.ino = i;
    if (inode.kind === Kind.Directory) {
      let subdirs = 0;
      for (const c of inode.entries) {
        if (c instanceof Link) continue;
        if (c.kind === Kind.Directory) subdirs++;
        inodes.push(c);
      }
      inode.nlink = 2 + subdirs;
    }
    if (inode.xattrs.length > 1) sortXattrs(inode.xattrs);
    if (inode.mtimeSec < minSec || (inode.mtimeSec === minSec && inode.mtimeNsec < minNsec)) {
      minSec = inode.mtimeSec;
      minNsec = inode.mtimeNsec;
    }
    for (const x of inode.xattrs) if (x.key.isAcl) hasAcl = true;
  }
  return { inodes, hasAcl, minMtimeSec: minSec, minMtimeNsec: minNsec };
}

/** Whether an inode stores this xattr as a shared-area reference, given the references before it. */
export function isSharedHere(x: Xattr, sharedBefore: number): boolean {
  return x.sharedOffset >= 0 && sharedBefore < EROFS_XATTR_MAX_SHARED;
}

/** Xattrs used by more than one inode go to the shared area, in a canonical order. */
function shareXattrs(inodes: Inode[]): Xattr[] {
  const shared: Xattr[] = [];
  for (const n of inodes) {
    for (const x of n.xattrs) if (++x.count === 2 && !isOwnValue(x)) shared.push(x);
  }
  // Descending by key, then by value length, then by value bytes.
  for (const x of shared) x.bytes ??= xattrValueBytes(x); // kept for the comparisons
  shared.sort((a, b) => {
    if (a.key !== b.key) return b.key.rank - a.key.rank;
    if (a.valueSize !== b.valueSize) return b.valueSize - a.valueSize;
    return Buffer.compare(b.bytes!, a.bytes!);
  });
  let offset = 0;
  for (const x of shared) {
    x.sharedOffset = offset;
    offset += x.entrySize;
  }
  return shared;
}

/** How many of an inode's xattrs are references to the shared area. */
export function sharedXattrCount(inode: Inode): number {
  let sharedCount = 0;
  for (const x of inode.xattrs) if (isSharedHere(x, sharedCount)) sharedCount++;
  return sharedCount;
}

/** Bytes of an inode's xattr area (header, shared references, inline entries), 0 for none. */
export function xattrAreaBytes(inode: Inode): number {
  let shared = 0;
  let inlineBytes = 0;
  for (const x of inode.xattrs) {
    if (isSharedHere(x, shared)) shared++;
    else inlineBytes += x.entrySize;
  }
  return shared === 0 && inlineBytes === 0 ? 0 : roundUp(EROFS_XATTR_HEADER_SIZE + shared * 4 + inlineBytes, 4);
}

/** The image's tree of a checked manifest, at format `version` (or, given a range, the lowest that fits). */
export function buildTree(manifest: Manifest, minVersion: number, maxVersion: number, consume = false): ImageTree {
  return buildTreeOf(new ManifestSource(manifest.entries, consume), minVersion, maxVersion);
}

/** The image's tree of a source, at format `version` (or, given a range, the lowest that fits). */
export function buildTreeOf(source: TreeSource, minVersion: number, maxVersion: number): ImageTree {
  const codec = source.codec;
  const b = new TreeBuilder(codec, minVersion, maxVersion);
  const root = buildInodes(source, b);
  for (const inode of b.inodes) {
    if (inode.kind !== Kind.Directory) continue;
    insertIfAbsent(inode, new Link('.', inode));
    insertIfAbsent(inode, new Link('..', inode.parent));
  }
  setXattr(root, b.overlay.opaque);
  addRootWhiteouts(root);
  rankKeys(b.table);
  const numbered = numberInodes(root);
  return { ...numbered, codec, version: b.version, sharedXattrs: shareXattrs(numbered.inodes), digests: b.digests };
}
