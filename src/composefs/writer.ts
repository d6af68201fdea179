// The composefs image writer: a pure, deterministic function from a checked
// manifest to the bytes of an EROFS image, identical to what mkcomposefs 1.0.8
// writes for the same tree (`--from-file`, same min/max format version).
//
// Three steps. prepareTree() turns the manifest into the tree the image holds:
// overlay xattrs added (metacopy digest, redirect, escaped whiteouts, opaque),
// "." and ".." entries, the 256 whiteouts "00".."ff" in the root that hide the
// object store's fan-out directories, inodes numbered breadth first, xattrs
// sorted and the shared ones chosen. Then layoutImage() runs twice through one
// small ImageSink interface: a measuring pass that only advances a position and
// records where every inode and data block lands, and an emitting pass that
// writes each byte once into a buffer of exactly the measured size, using the
// addresses the first pass found. Nothing is patched afterwards.
//
// Built for trees of millions of entries: names, symlink targets, backing paths
// and digests stay the manifest's own strings until they are written into the
// image (or, when one of them is given as {"base64"}, binary strings of their
// bytes: manifest/text.ts; either way the image holds exactly those bytes, and
// names sort in byte order); each distinct xattr (key and value) is one record
// that every inode carrying it points to; keys are ranked once, so sorting
// compares integers.
import type { Entry, Manifest } from '../schema/types.generated.js';
import { InvalidManifestError } from '../manifest/errors.js';
import { checkManifest } from '../manifest/check.js';
import { MAX_XATTR_BUDGET, XATTR_BUDGET_HEADER, xattrBudgetCost } from '../manifest/limits.js';
import { comparePaths } from '../manifest/paths.js';
import { codecFor, type TextCodec } from '../manifest/text.js';
import {
  COMPOSEFS_DEFAULT_MAX_VERSION, COMPOSEFS_DEFAULT_MIN_VERSION, COMPOSEFS_FLAG_HAS_ACL, COMPOSEFS_HEADER_SIZE,
  COMPOSEFS_HEADER_VERSION, COMPOSEFS_MAGIC, COMPOSEFS_MAX_CHUNKS, COMPOSEFS_VERSION_MAX, EROFS_BLOCK_BITS,
  EROFS_BLOCK_SIZE, EROFS_CHUNK_FORMAT_BLKBITS_MASK, EROFS_DIRENT_SIZE, EROFS_FEATURE_COMPAT_MTIME,
  EROFS_FEATURE_COMPAT_XATTR_FILTER, EROFS_INODE_CHUNK_BASED, EROFS_INODE_COMPACT_SIZE, EROFS_INODE_EXTENDED_SIZE,
  EROFS_INODE_FLAT_INLINE, EROFS_INODE_FLAT_PLAIN, EROFS_INODE_LAYOUT_COMPACT, EROFS_INODE_LAYOUT_EXTENDED,
  EROFS_SLOT_SIZE, EROFS_SUPER_MAGIC, EROFS_SUPER_OFFSET, EROFS_SUPER_SIZE, EROFS_XATTR_ENTRY_SIZE,
  EROFS_XATTR_FILTER_BITS, EROFS_XATTR_FILTER_DEFAULT, EROFS_XATTR_FILTER_SEED, EROFS_XATTR_HEADER_SIZE,
  EROFS_XATTR_MAX_SHARED, EROFS_XATTR_WRITE_PREFIXES, FSVERITY_HASH_ALG_SHA256, OVERLAY_ESCAPE_PREFIX,
  OVERLAY_ESCAPED_OPAQUE, OVERLAY_ESCAPED_WHITEOUT, OVERLAY_ESCAPED_WHITEOUTS, OVERLAY_METACOPY, OVERLAY_OPAQUE,
  OVERLAY_PREFIX, OVERLAY_REDIRECT, OVERLAY_USER_OPAQUE, OVERLAY_USER_WHITEOUT, OVERLAY_USER_WHITEOUTS, S_IFBLK,
  S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, erofsFileType, inodeFormat, writeStruct, COMPOSEFS_HEADER, SUPERBLOCK,
  INODE_COMPACT, INODE_EXTENDED, XATTR_BODY_HEADER, XATTR_ENTRY, DIRENT, ENTRY_TYPE_BITS,
} from './format.js';
import { xxh32 } from './xxhash.js';

export interface WriteOptions {
  /** Lowest format version to write (default 0). */
  minVersion?: number;
  /** Highest format version allowed (default 1); used when the tree has whiteouts. */
  maxVersion?: number;
}

// ---- digests ---------------------------------------------------------------------

/** A digest as the schema spells it: 64 lowercase hex digits. */
function isLowerHex64(s: string): boolean {
  if (s.length !== 64) return false;
  for (let i = 0; i < 64; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false;
  }
  return true;
}

// ---- xattrs: one record per distinct key, one per distinct key and value ---------

interface XattrKey {
  /** The key as a string of the image's codec (with its bytes in `bytes`). */
  text: string;
  codec: TextCodec;
  bytes: Buffer;
  /** Index of the short prefix stripped on disk, and the rest of the key. */
  prefixIndex: number;
  suffix: Buffer;
  /** The bit this key sets in an inode's xattr name filter. */
  filterBit: number;
  isAcl: boolean;
  /** Position in byte order among all keys of the image, set before sorting. */
  rank: number;
  /** The values seen with this key, by identity (see Xattr.identity). */
  values: Map<string, Xattr>;
  /** The key a user's trusted.overlay.* key is renamed to, once asked for. */
  escaped: XattrKey | null;
}

/** How a value's bytes are held: decoded, or still the manifest's text. */
const VALUE_BYTES = 0;
/** "/" and the backing path. */
const VALUE_REDIRECT = 1;
/** The fs-verity metacopy header and the digest from hex; empty without a digest. */
const VALUE_METACOPY = 2;
/** The identity of the metacopy of a file without digest (not hex, so no digest's). */
const NO_DIGEST = '-';

/** One distinct xattr; every inode that carries it points to this record. */
interface Xattr {
  key: XattrKey;
  kind: number;
  bytes: Buffer | null;
  /**
   * What makes two values of this key equal: canonical base64 of the bytes for
   * VALUE_BYTES, the canonical text for the others (a key has only one kind).
   */
  identity: string;
  valueSize: number;
  /** Bytes of the on-disk entry, 4-aligned. */
  entrySize: number;
  /** Inodes that carry it, counted once the tree is final. */
  count: number;
  /** Byte offset in the shared xattr area, or -1. */
  sharedOffset: number;
}

/** Interns keys and xattrs for one image. */
class XattrTable {
  private readonly keysByText = new Map<string, XattrKey>();
  readonly keys: XattrKey[] = [];

  constructor(readonly codec: TextCodec) {}

  /** A key, as a string of the codec: one string per byte string, so equal keys meet here. */
  key(text: string): XattrKey {
    let k = this.keysByText.get(text);
    if (!k) {
      k = newKey(text, this.codec);
      this.keys.push(k);
      this.keysByText.set(text, k);
    }
    return k;
  }

  /** The key trusted.overlay.X becomes: trusted.overlay.overlay.X. */
  escapedKey(k: XattrKey): XattrKey {
    return (k.escaped ??= this.key(OVERLAY_ESCAPE_PREFIX + k.text.slice(OVERLAY_PREFIX.length)));
  }

  /** A value given in canonical base64 (checkManifest made sure of that). */
  fromBase64(key: XattrKey, base64: string): Xattr {
    const x = key.values.get(base64);
    return x ?? this.add(key, VALUE_BYTES, base64, Buffer.from(base64, 'base64'));
  }

  fromBytes(key: XattrKey, bytes: Buffer): Xattr {
    return this.fromBase64(key, bytes.toString('base64'));
  }

  redirect(key: XattrKey, backing: string): Xattr {
    return key.values.get(backing) ?? this.add(key, VALUE_REDIRECT, backing, null);
  }

  metacopy(key: XattrKey, digest: string | undefined): Xattr {
    const given = digest ?? NO_DIGEST;
    const x = key.values.get(given);
    if (x) return x;
    const identity = digest === undefined || isLowerHex64(digest) ? given : Buffer.from(digest, 'hex').toString('hex');
    return key.values.get(identity) ?? this.add(key, VALUE_METACOPY, identity, null, given);
  }

  private add(key: XattrKey, kind: number, identity: string, bytes: Buffer | null, alias?: string): Xattr {
    const valueSize =
      kind === VALUE_BYTES ? bytes!.length : kind === VALUE_REDIRECT ? 1 + key.codec.length(identity) : identity === NO_DIGEST ? 0 : 4 + identity.length / 2;
    const x: Xattr = {
      key, kind, bytes, identity, valueSize, count: 0, sharedOffset: -1,
      entrySize: roundUp(EROFS_XATTR_ENTRY_SIZE + key.suffix.length + valueSize, 4),
    };
    key.values.set(identity, x);
    if (alias !== undefined && alias !== identity) key.values.set(alias, x);
    return x;
  }
}

function newKey(text: string, codec: TextCodec): XattrKey {
  const bytes = codec.bytes(text);
  let prefixIndex = 0;
  let suffix = bytes;
  for (const [prefix, index] of EROFS_XATTR_WRITE_PREFIXES) {
    if (text.startsWith(prefix)) {
      prefixIndex = index;
      suffix = bytes.subarray(prefix.length); // the prefixes are ASCII: as many bytes as chars in either codec
      break;
    }
  }
  return {
    text, codec, bytes, prefixIndex, suffix, rank: 0, values: new Map(), escaped: null,
    filterBit: xxh32(suffix, (EROFS_XATTR_FILTER_SEED + prefixIndex) >>> 0) & (EROFS_XATTR_FILTER_BITS - 1),
    isAcl: text === 'system.posix_acl_access' || text === 'system.posix_acl_default',
  };
}

/** The value bytes of an xattr, encoded at `at`. */
function encodeXattrValue(x: Xattr, buf: Buffer, at: number): void {
  if (x.kind === VALUE_BYTES) {
    buf.set(x.bytes!, at);
  } else if (x.kind === VALUE_REDIRECT) {
    buf[at] = 0x2f; // "/"
    x.key.codec.write(buf, at + 1, x.identity, x.valueSize - 1);
  } else if (x.valueSize > 0) {
    buf[at] = 0; // struct ovl_metacopy: version 0, length, flags, digest algorithm
    buf[at + 1] = x.valueSize & 0xff;
    buf[at + 2] = 0;
    buf[at + 3] = FSVERITY_HASH_ALG_SHA256;
    buf.write(x.identity, at + 4, 'hex');
  }
}

function xattrValueBytes(x: Xattr): Buffer {
  if (x.bytes) return x.bytes;
  const b = Buffer.alloc(x.valueSize);
  encodeXattrValue(x, b, 0);
  return b;
}

// ---- the tree the image holds ---------------------------------------------------

interface Child {
  /** A string of the image's codec. */
  name: string;
  /** Bytes of the name. */
  nameSize: number;
  node: Node;
  /** ".", ".." and hardlinks name a node that lives elsewhere in the tree. */
  isLink: boolean;
}

interface DirentChunk {
  first: number;
  count: number;
  bytes: number;
}

const NO_XATTRS: readonly Xattr[] = Object.freeze([]);
const NO_CHILDREN: readonly Child[] = Object.freeze([]);

class Node {
  mode = 0;
  uid = 0;
  gid = 0;
  nlink = 1;
  mtimeSec = 0;
  mtimeNsec = 0;
  /** st_size: the file size for regular files, the target length for symlinks. */
  size = 0;
  rdev = 0;
  /** Sorted by key once the tree is final. */
  xattrs: Xattr[] = NO_XATTRS as Xattr[];
  /** Xattr bytes as composefs budgets them (it does not recount renamed keys). */
  xattrBudget = 0;
  children: Child[] = NO_CHILDREN as Child[];
  parent: Node;
  /** Symlink target or backing path of a regular file (a string of the image's codec). */
  payload: string | null = null;
  payloadSize = 0;
  content: Buffer | null = null;
  digest: string | undefined = undefined;
  /** The manifest entry it comes from, for error messages. */
  entryIndex: number;
  // Set by numbering and layout:
  ino = 0;
  nid = 0;
  compact = false;
  xattrAreaSize = 0;
  sharedCount = 0;
  dataBlocks = 0;
  tailSize = 0;
  /** Chunk geometry of an external file, computed once. */
  chunkBits = 0;
  chunkCount = 0;
  /** Directory entries split into blocks, computed once the children are final. */
  chunks: DirentChunk[] | null = null;

  constructor(entryIndex: number, parent: Node | null) {
    this.entryIndex = entryIndex;
    this.parent = parent ?? this;
  }

  get pointer(): string {
    return `/entries/${this.entryIndex}`;
  }

  addXattr(x: Xattr): void {
    if (this.xattrs === NO_XATTRS) this.xattrs = [];
    this.xattrs.push(x);
  }
}

function isType(node: Node, type: number): boolean {
  return (node.mode & S_IFMT) === type;
}

/** Sets or replaces an xattr, under the per-inode budget composefs applies. */
function setXattr(node: Node, x: Xattr): void {
  const xattrs = node.xattrs;
  for (let i = 0; i < xattrs.length; i++) {
    const old = xattrs[i]!;
    if (old.key !== x.key) continue;
    xattrs.splice(i, 1);
    node.xattrBudget = xattrs.length === 0 ? 0 : node.xattrBudget - xattrBudgetCost(old.key.bytes.length, old.valueSize);
    break;
  }
  const cost = xattrBudgetCost(x.key.bytes.length, x.valueSize) + (node.xattrs.length === 0 ? XATTR_BUDGET_HEADER : 0);
  if (node.xattrBudget + cost > MAX_XATTR_BUDGET) {
    throw new InvalidManifestError(
      `no room for the ${x.key.codec.show(x.key.text)} xattr the image needs: the xattrs would take ${node.xattrBudget + cost} bytes, at most ${MAX_XATTR_BUDGET}`,
      node.pointer,
    );
  }
  node.addXattr(x);
  node.xattrBudget += cost;
}

function nodeFromEntry(e: Exclude<Entry, { type: 'hardlink' }>, index: number, parent: Node | null, table: XattrTable): Node {
  const codec = table.codec;
  const node = new Node(index, parent);
  node.mode = ENTRY_TYPE_BITS[e.type] | e.mode;
  node.uid = e.uid;
  node.gid = e.gid;
  node.nlink = e.nlink ?? 0; // 0: 1 + incoming hardlinks, filled in by buildTree
  node.mtimeSec = e.mtime.sec;
  node.mtimeNsec = e.mtime.nsec;
  switch (e.type) {
    case 'file':
      node.size = e.size;
      if (e.inline !== undefined && e.size > 0) node.content = Buffer.from(e.inline, 'base64');
      node.digest = e.digest;
      if (e.backing !== undefined) {
        node.payload = codec.text(e.backing);
        node.payloadSize = codec.length(node.payload);
      }
      if (node.content === null && node.size > 0) {
        const bitsNeeded = node.size <= 1 ? 1 : bitLength(node.size - 1);
        // As few chunks as possible, each at least a block and at most 2^(12+31).
        node.chunkBits = Math.min(Math.max(bitsNeeded, EROFS_BLOCK_BITS), EROFS_BLOCK_BITS + EROFS_CHUNK_FORMAT_BLKBITS_MASK);
        node.chunkCount = Math.ceil(node.size / 2 ** node.chunkBits);
      }
      break;
    case 'symlink':
      node.payload = codec.text(e.target);
      node.payloadSize = codec.length(node.payload);
      node.size = node.payloadSize;
      break;
    case 'chardev':
    case 'blockdev':
      node.rdev = e.rdev;
      node.size = e.size ?? 0;
      break;
    case 'dir':
      node.children = [];
      break; // a directory's size is its dirents
    default:
      node.size = e.size ?? 0;
  }
  if (e.xattrs) {
    for (const given of e.xattrs) {
      const x = table.fromBase64(table.key(codec.text(given.key)), given.value);
      node.xattrBudget += xattrBudgetCost(x.key.bytes.length, x.valueSize) + (node.xattrs.length === 0 ? XATTR_BUDGET_HEADER : 0);
      node.addXattr(x);
    }
  }
  return node;
}

function childOf(path: string, node: Node, isLink: boolean, codec: TextCodec): Child {
  const name = path.slice(path.lastIndexOf('/') + 1);
  return { name, nameSize: codec.length(name), node, isLink };
}

interface BuiltTree {
  root: Node;
  /** Every node, in manifest order (which is depth-first, children in order). */
  nodes: Node[];
  hasWhiteouts: boolean;
}

/** Builds the node tree; manifest order is already sorted, so children come sorted. */
function buildTree(manifest: Manifest, table: XattrTable): BuiltTree {
  const codec = table.codec;
  const entries = manifest.entries;
  const root = nodeFromEntry(entries[0] as Exclude<Entry, { type: 'hardlink' }>, 0, null, table);
  const nodes: Node[] = [root];
  // The directories from the root down to the last one seen, with their paths.
  const dirPaths: string[] = ['/'];
  const dirNodes: Node[] = [root];
  const links: Array<{ child: Child; target: string }> = [];
  const nodeOfEntry: Array<Node | undefined> = [root];
  let hasWhiteouts = isType(root, S_IFCHR) && root.rdev === 0;
  for (let i = 1; i < entries.length; i++) {
    const e = entries[i]!;
    const path = codec.text(e.path);
    const cut = path.lastIndexOf('/');
    const parentLength = cut === 0 ? 1 : cut;
    let top = dirPaths.length - 1;
    while (!(dirPaths[top]!.length === parentLength && path.startsWith(dirPaths[top]!))) top--;
    dirPaths.length = top + 1;
    dirNodes.length = top + 1;
    const parent = dirNodes[top]!;
    if (e.type === 'hardlink') {
      const child = childOf(path, root, true, codec);
      parent.children.push(child);
      links.push({ child, target: codec.text(e.target) });
      nodeOfEntry.push(undefined);
      continue;
    }
    const node = nodeFromEntry(e, i, parent, table);
    parent.children.push(childOf(path, node, false, codec));
    if (e.type === 'dir') {
      dirPaths.push(path);
      dirNodes.push(node);
    }
    if (node.rdev === 0 && isType(node, S_IFCHR)) hasWhiteouts = true;
    nodes.push(node);
    nodeOfEntry.push(node);
  }
  const incoming = new Map<Node, number>();
  if (links.length > 0) {
    const byPath = new Map<string, Node>();
    entries.forEach((e, i) => nodeOfEntry[i] && byPath.set(codec.text(e.path), nodeOfEntry[i]!));
    for (const l of links) {
      l.child.node = byPath.get(l.target)!;
      incoming.set(l.child.node, (incoming.get(l.child.node) ?? 0) + 1);
    }
  }
  for (const n of nodes) if (n.nlink === 0) n.nlink = 1 + (incoming.get(n) ?? 0);
  return { root, nodes, hasWhiteouts };
}

/** Inserts a child in strcmp order of names, unless one of that name exists. */
function insertChildIfAbsent(dir: Node, child: Child): void {
  const children = dir.children;
  let lo = 0;
  let hi = children.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const order = comparePaths(children[mid]!.name, child.name); // names hold no "/": byte order
    if (order === 0) return;
    if (order < 0) lo = mid + 1;
    else hi = mid;
  }
  children.splice(lo, 0, child);
}

function bitLength(n: number): number {
  return n >= 2 ** 32 ? 32 + bitLength(Math.floor(n / 2 ** 32)) : 32 - Math.clz32(n);
}

function isExternalFile(node: Node): boolean {
  return isType(node, S_IFREG) && node.size > 0 && node.content === null;
}

/** The overlay xattrs the image needs, made once per image. */
class OverlayXattrs {
  readonly metacopyKey: XattrKey;
  readonly redirectKey: XattrKey;
  readonly escapedWhiteout: Xattr;
  readonly userWhiteout: Xattr;
  readonly escapedWhiteouts: Xattr;
  readonly userWhiteouts: Xattr;
  readonly escapedOpaque: Xattr;
  readonly userOpaque: Xattr;
  readonly opaque: Xattr;
  constructor(readonly table: XattrTable) {
    const empty = Buffer.alloc(0);
    const x = Buffer.from('x');
    this.metacopyKey = table.key(OVERLAY_METACOPY);
    this.redirectKey = table.key(OVERLAY_REDIRECT);
    this.escapedWhiteout = table.fromBytes(table.key(OVERLAY_ESCAPED_WHITEOUT), empty);
    this.userWhiteout = table.fromBytes(table.key(OVERLAY_USER_WHITEOUT), empty);
    this.escapedWhiteouts = table.fromBytes(table.key(OVERLAY_ESCAPED_WHITEOUTS), empty);
    this.userWhiteouts = table.fromBytes(table.key(OVERLAY_USER_WHITEOUTS), empty);
    this.escapedOpaque = table.fromBytes(table.key(OVERLAY_ESCAPED_OPAQUE), x);
    this.userOpaque = table.fromBytes(table.key(OVERLAY_USER_OPAQUE), x);
    this.opaque = table.fromBytes(table.key(OVERLAY_OPAQUE), Buffer.from('y'));
  }
}

/** The overlayfs view: escape user overlay xattrs, describe external files and whiteouts. */
function addOverlayXattrs(node: Node, version: number, overlay: OverlayXattrs): void {
  const table = overlay.table;
  const xattrs = node.xattrs;
  for (let i = 0; i < xattrs.length; i++) {
    const x = xattrs[i]!;
    if (x.key.text.startsWith(OVERLAY_PREFIX)) {
      // Renamed in place; composefs keeps the budget of the old name.
      const escaped = table.escapedKey(x.key);
      xattrs[i] = x.kind === VALUE_BYTES ? table.fromBase64(escaped, x.identity) : table.fromBytes(escaped, xattrValueBytes(x));
    }
  }
  if (isExternalFile(node)) {
    setXattr(node, table.metacopy(overlay.metacopyKey, node.digest));
    if (node.payload !== null && node.payloadSize > 0) setXattr(node, table.redirect(overlay.redirectKey, node.payload));
  }
  if (isType(node, S_IFCHR) && node.rdev === 0) {
    // An overlay whiteout inside the image would act on the image's own
    // layer; stored escaped, overlayfs presents it to the upper mount.
    node.size = 0;
    node.mode = S_IFREG | (node.mode & ~S_IFMT);
    setXattr(node, overlay.escapedWhiteout);
    setXattr(node, overlay.userWhiteout);
    setXattr(node.parent, overlay.escapedWhiteouts);
    setXattr(node.parent, overlay.userWhiteouts);
    if (version >= 1) {
      setXattr(node.parent, overlay.escapedOpaque);
      setXattr(node.parent, overlay.userOpaque);
    }
  }
}

/** Every node in manifest order, which is the depth-first order mkcomposefs rewrites in. */
function rewriteForErofs(nodes: Node[], version: number, overlay: OverlayXattrs): void {
  for (const node of nodes) {
    if (isExternalFile(node) && node.chunkCount > COMPOSEFS_MAX_CHUNKS) {
      throw new InvalidManifestError(`file size ${node.size} is too large for composefs`, node.pointer);
    }
    addOverlayXattrs(node, version, overlay);
    if (!isType(node, S_IFDIR)) continue;
    insertChildIfAbsent(node, { name: '.', nameSize: 1, node, isLink: true });
    insertChildIfAbsent(node, { name: '..', nameSize: 2, node: node.parent, isLink: true });
  }
}

const HEX_DIGITS = '0123456789abcdef';

/** The character devices 0:0 named 00..ff that hide the object store's fan-out. */
function addRootWhiteouts(root: Node): void {
  const selinux = root.xattrs.find((x) => x.key.text === 'security.selinux');
  for (let i = 0; i <= 255; i++) {
    const w = new Node(root.entryIndex, root);
    w.mode = S_IFCHR | 0o644;
    w.uid = root.uid;
    w.gid = root.gid;
    w.mtimeSec = root.mtimeSec;
    w.mtimeNsec = root.mtimeNsec;
    const before = root.children.length;
    insertChildIfAbsent(root, { name: HEX_DIGITS[i >> 4]! + HEX_DIGITS[i & 15]!, nameSize: 2, node: w, isLink: false });
    if (selinux && root.children.length > before) setXattr(w, selinux);
  }
}

interface PreparedTree {
  /** Breadth-first: the inode order. */
  nodes: Node[];
  /** How names and payloads are held: written as their bytes. */
  codec: TextCodec;
  version: number;
  hasAcl: boolean;
  minMtimeSec: number;
  minMtimeNsec: number;
  sharedXattrs: Xattr[];
  sharedXattrBytes: number;
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
    xattrs[j + 1] = x;
  }
}

/** Breadth-first numbering, link counts, canonical xattr order, ACL flag, oldest mtime. */
function numberInodes(root: Node): Pick<PreparedTree, 'nodes' | 'hasAcl' | 'minMtimeSec' | 'minMtimeNsec'> {
  const nodes: Node[] = [root];
  let minSec = root.mtimeSec;
  let minNsec = root.mtimeNsec;
  let hasAcl = false;
  for (let i = 0; i < nodes.length; i++) {
    const node = nodes[i]!;
    node.ino = i;
    if (isType(node, S_IFDIR)) {
      let subdirs = 0;
      for (const c of node.children) {
        if (c.isLink) continue;
        if (isType(c.node, S_IFDIR)) subdirs++;
        nodes.push(c.node);
      }
      node.nlink = 2 + subdirs;
      node.chunks = direntChunks(node);
    }
    if (node.xattrs.length > 1) sortXattrs(node.xattrs);
    if (node.mtimeSec < minSec || (node.mtimeSec === minSec && node.mtimeNsec < minNsec)) {
      minSec = node.mtimeSec;
      minNsec = node.mtimeNsec;
    }
    for (const x of node.xattrs) if (x.key.isAcl) hasAcl = true;
  }
  return { nodes, hasAcl, minMtimeSec: minSec, minMtimeNsec: minNsec };
}

/** Whether an inode stores this xattr as a shared-area reference, given the references before it. */
function isSharedHere(x: Xattr, sharedBefore: number): boolean {
  return x.sharedOffset >= 0 && sharedBefore < EROFS_XATTR_MAX_SHARED;
}

/** Xattrs used by more than one inode go to the shared area, in a canonical order. */
function shareXattrs(nodes: Node[]): { sharedXattrs: Xattr[]; sharedXattrBytes: number } {
  const shared: Xattr[] = [];
  for (const n of nodes) {
    for (const x of n.xattrs) if (++x.count === 2) shared.push(x);
  }
  // Descending by key, then by value length, then by value bytes.
  for (const x of shared) x.bytes ??= xattrValueBytes(x); // kept for the comparisons
  shared.sort((a, b) => {
    if (a.key !== b.key) return b.key.rank - a.key.rank;
    if (a.valueSize !== b.valueSize) return b.valueSize - a.valueSize;
    return Buffer.compare(xattrValueBytes(b), xattrValueBytes(a));
  });
  let offset = 0;
  for (const x of shared) {
    x.sharedOffset = offset;
    offset += x.entrySize;
  }
  for (const n of nodes) {
    let sharedHere = 0;
    let inlineBytes = 0;
    for (const x of n.xattrs) {
      if (isSharedHere(x, sharedHere)) sharedHere++;
      else inlineBytes += x.entrySize;
    }
    n.sharedCount = sharedHere;
    n.xattrAreaSize = sharedHere === 0 && inlineBytes === 0 ? 0 : roundUp(EROFS_XATTR_HEADER_SIZE + sharedHere * 4 + inlineBytes, 4);
  }
  return { sharedXattrs: shared, sharedXattrBytes: offset };
}

function resolveVersion(options: WriteOptions): { min: number; max: number } {
  const min = options.minVersion ?? COMPOSEFS_DEFAULT_MIN_VERSION;
  const max = options.maxVersion ?? COMPOSEFS_DEFAULT_MAX_VERSION;
  for (const [name, v] of [['minimum', min], ['maximum', max]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > COMPOSEFS_VERSION_MAX) {
      throw new InvalidManifestError(`${name} format version ${v} is not supported: use 0..${COMPOSEFS_VERSION_MAX}`, '(options)');
    }
  }
  return { min, max: Math.max(min, max) };
}

export function prepareTree(manifest: Manifest, options: WriteOptions = {}): PreparedTree {
  const { min, max } = resolveVersion(options);
  const codec = codecFor(manifest.entries);
  const table = new XattrTable(codec);
  const overlay = new OverlayXattrs(table);
  const { root, nodes, hasWhiteouts } = buildTree(manifest, table);
  // Format 1 changed how whiteouts are marked; use it only when needed.
  const version = min < 1 && max >= 1 && hasWhiteouts ? 1 : min;
  rewriteForErofs(nodes, version, overlay);
  setXattr(root, overlay.opaque);
  addRootWhiteouts(root);
  rankKeys(table);
  const numbered = numberInodes(root);
  return { ...numbered, codec, version, ...shareXattrs(numbered.nodes) };
}

// ---- layout, run once to measure and once to emit -------------------------------

/** Where the layout writes. */
interface ImageSink {
  readonly position: number;
  /**
   * Advances over `size` bytes and returns the buffer to encode them into,
   * starting at the position before the call; null when only measuring.
   */
  take(size: number): Buffer | null;
  /** Skips n bytes (zeros). */
  zeros(n: number): void;
  fill(n: number, byte: number): void;
}

class MeasuringSink implements ImageSink {
  position = 0;
  take(size: number): null {
    this.position += size;
    return null;
  }
  zeros(n: number): void { this.position += n; }
  fill(n: number): void { this.position += n; }
}

class BufferSink implements ImageSink {
  position = 0;
  constructor(private readonly buf: Buffer) {}
  take(size: number): Buffer {
    this.position += size;
    return this.buf;
  }
  zeros(n: number): void { this.position += n; } // the buffer starts zeroed
  fill(n: number, byte: number): void {
    this.buf.fill(byte, this.position, this.position + n);
    this.position += n;
  }
}

/** What the measuring pass learns and the emitting pass needs up front. */
interface Addresses {
  inodesEnd: number;
  dataStart: number;
  dataBlocks: number;
  totalSize: number;
}

function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

function align(out: ImageSink, to: number): void {
  out.zeros(roundUp(out.position, to) - out.position);
}

/** Splits a directory's entries into blocks; each chunk is the children of one block. */
function direntChunks(node: Node): DirentChunk[] {
  const chunks: DirentChunk[] = [];
  const children = node.children;
  let first = 0;
  let bytes = 0;
  for (let i = 0; i < children.length; i++) {
    const len = EROFS_DIRENT_SIZE + children[i]!.nameSize;
    if (bytes + len > EROFS_BLOCK_SIZE) {
      chunks.push({ first, count: i - first, bytes });
      first = i;
      bytes = 0;
    }
    bytes += len;
  }
  chunks.push({ first, count: children.length - first, bytes });
  return chunks;
}

/** Blocks and inline tail before placement: a directory inlines at most half a block. */
function initialDataShape(node: Node): void {
  node.dataBlocks = 0;
  node.tailSize = 0;
  const type = node.mode & S_IFMT;
  if (type === S_IFDIR) {
    const chunks = node.chunks!;
    node.dataBlocks = chunks.length - 1;
    node.tailSize = chunks[chunks.length - 1]!.bytes;
    if (node.tailSize > EROFS_BLOCK_SIZE / 2) {
      node.dataBlocks++;
      node.tailSize = 0;
    }
  } else if (type === S_IFLNK) {
    node.tailSize = node.payloadSize;
  } else if (type === S_IFREG && node.size > 0) {
    if (node.content) {
      node.dataBlocks = Math.floor(node.size / EROFS_BLOCK_SIZE);
      node.tailSize = node.size % EROFS_BLOCK_SIZE;
      if (node.tailSize > EROFS_BLOCK_SIZE / 2) {
        node.dataBlocks++;
        node.tailSize = 0;
      }
    } else {
      node.tailSize = node.chunkCount * 4;
    }
  }
}

function fitsCompactInode(node: Node, t: PreparedTree): boolean {
  if (node.mtimeSec !== t.minMtimeSec || node.mtimeNsec !== t.minMtimeNsec) return false;
  if (node.nlink > 0xffff || node.uid > 0xffff || node.gid > 0xffff) return false;
  const size = isType(node, S_IFDIR) ? node.dataBlocks * EROFS_BLOCK_SIZE + node.tailSize : node.size;
  return size <= 0xffffffff;
}

/**
 * Padding before an inode placed at `pos` so that its inline tail does not
 * cross a block boundary; may instead move the tail out to a data block.
 */
function tailPadding(node: Node, pos: number, inodeSize: number): number {
  const nonTail = inodeSize + node.xattrAreaSize;
  const total = nonTail + node.tailSize;
  if (isType(node, S_IFLNK)) {
    // A symlink keeps inode and target in one block if it can.
    const startBlock = Math.floor(pos / EROFS_BLOCK_SIZE);
    const endBlock = Math.floor((pos + total - 1) / EROFS_BLOCK_SIZE);
    if (Math.floor(total / EROFS_BLOCK_SIZE) > 0) {
      node.dataBlocks++;
      node.tailSize = 0;
    }
    return startBlock !== endBlock ? roundUp(pos, EROFS_BLOCK_SIZE) - pos : 0;
  }
  const remainder = EROFS_BLOCK_SIZE - ((pos + nonTail) % EROFS_BLOCK_SIZE);
  if (remainder >= node.tailSize) return 0;
  const pad = roundUp(remainder, EROFS_SLOT_SIZE);
  if (node.tailSize <= EROFS_BLOCK_SIZE - ((pos + nonTail + pad) % EROFS_BLOCK_SIZE)) return pad;
  node.dataBlocks++;
  node.tailSize = 0;
  return roundUp(pos, EROFS_BLOCK_SIZE) - pos;
}

function xattrNameFilter(node: Node): number {
  let filter = 0;
  for (const x of node.xattrs) filter |= 1 << x.key.filterBit;
  return (EROFS_XATTR_FILTER_DEFAULT & ~filter) >>> 0;
}

/** One xattr entry (header, key suffix, value) at `at`; its padding stays zero. */
function encodeXattrEntry(buf: Buffer, at: number, x: Xattr): void {
  const suffix = x.key.suffix;
  writeStruct(XATTR_ENTRY, buf, at, { nameLength: suffix.length, nameIndex: x.key.prefixIndex, valueSize: x.valueSize });
  buf.set(suffix, at + EROFS_XATTR_ENTRY_SIZE);
  encodeXattrValue(x, buf, at + EROFS_XATTR_ENTRY_SIZE + suffix.length);
}

/** The dirents and then the names of children [first, first + count) at `at`. */
function encodeDirents(buf: Buffer, at: number, node: Node, chunk: DirentChunk, codec: TextCodec): void {
  const start = at;
  let nameAt = at + chunk.count * EROFS_DIRENT_SIZE;
  for (let i = chunk.first; i < chunk.first + chunk.count; i++) {
    const c = node.children[i]!;
    writeStruct(DIRENT, buf, at, { nid: c.node.nid, nameOffset: nameAt - start, fileType: erofsFileType(c.node.mode) });
    codec.write(buf, nameAt, c.name, c.nameSize);
    at += EROFS_DIRENT_SIZE;
    nameAt += c.nameSize;
  }
}

/** The inode, its xattr area and its inline tail, as one record at `at`. */
function encodeInodeRecord(buf: Buffer, at: number, node: Node, known: Addresses, blockAddr: number, codec: TextCodec): void {
  const inodeLayout = node.compact ? EROFS_INODE_LAYOUT_COMPACT : EROFS_INODE_LAYOUT_EXTENDED;
  let dataLayout = node.tailSize > 0 ? EROFS_INODE_FLAT_INLINE : EROFS_INODE_FLAT_PLAIN;
  let size = 0;
  let u = 0;
  let chunkFormat: number | undefined;
  const type = node.mode & S_IFMT;
  if (type === S_IFDIR) {
    size = node.dataBlocks * EROFS_BLOCK_SIZE + node.tailSize;
    if (node.dataBlocks > 0) u = blockAddr;
  } else if (type === S_IFREG) {
    size = node.size;
    if (node.dataBlocks > 0) u = blockAddr;
    if (isExternalFile(node)) {
      dataLayout = EROFS_INODE_CHUNK_BASED;
      chunkFormat = node.chunkBits - EROFS_BLOCK_BITS;
    }
  } else if (type === S_IFLNK) {
    size = node.payloadSize;
    if (node.dataBlocks > 0) u = blockAddr;
  } else if (type === S_IFCHR || type === S_IFBLK) {
    u = node.rdev;
  }
  const icount = node.xattrAreaSize === 0 ? 0 : (node.xattrAreaSize - EROFS_XATTR_HEADER_SIZE) / 4 + 1;
  const inode = {
    format: inodeFormat(inodeLayout, dataLayout),
    xattrIcount: icount,
    mode: node.mode & 0xffff,
    nlink: node.nlink,
    size,
    // The chunk format takes the low 16 bits of the union.
    u: chunkFormat === undefined ? u : ((u & 0xffff0000) | chunkFormat) >>> 0,
    ino: node.ino,
    uid: node.uid,
    gid: node.gid,
    mtime: node.mtimeSec,
    mtimeNsec: node.mtimeNsec,
  };
  if (node.compact) writeStruct(INODE_COMPACT, buf, at, inode);
  else writeStruct(INODE_EXTENDED, buf, at, inode);

  at += node.compact ? EROFS_INODE_COMPACT_SIZE : EROFS_INODE_EXTENDED_SIZE;
  if (node.xattrAreaSize > 0) {
    writeStruct(XATTR_BODY_HEADER, buf, at, { nameFilter: xattrNameFilter(node), sharedCount: node.sharedCount });
    let ref = at + EROFS_XATTR_HEADER_SIZE;
    let inline = ref + node.sharedCount * 4;
    const sharedBase = known.inodesEnd % EROFS_BLOCK_SIZE;
    let sharedHere = 0;
    for (const x of node.xattrs) {
      if (isSharedHere(x, sharedHere)) {
        sharedHere++;
        buf.writeUInt32LE((sharedBase + x.sharedOffset) / 4, ref);
        ref += 4;
      } else {
        encodeXattrEntry(buf, inline, x);
        inline += x.entrySize;
      }
    }
    at += node.xattrAreaSize;
  }
  if (node.tailSize === 0) return;
  if (type === S_IFDIR) {
    encodeDirents(buf, at, node, node.chunks![node.chunks!.length - 1]!, codec);
  } else if (type === S_IFLNK) {
    codec.write(buf, at, node.payload!, node.payloadSize);
  } else if (node.content) {
    buf.set(node.content.subarray(node.size - node.tailSize), at);
  } else {
    buf.fill(0xff, at, at + node.tailSize); // chunk pointers, all EROFS_NULL_ADDR
  }
}

/** Full blocks of a node: directory blocks, or the first block of content. */
function writeDataBlocks(out: ImageSink, node: Node, codec: TextCodec): void {
  if (node.dataBlocks === 0) return;
  if (isType(node, S_IFDIR)) {
    // Chunks beyond the block count stayed inline as the tail.
    for (let i = 0; i < node.dataBlocks; i++) {
      const at = out.position;
      const buf = out.take(EROFS_BLOCK_SIZE);
      if (buf) encodeDirents(buf, at, node, node.chunks![i]!, codec);
    }
    return;
  }
  if (isExternalFile(node)) {
    out.fill(EROFS_BLOCK_SIZE, 0xff); // a block of null chunk pointers
    return;
  }
  // composefs stores at most one out-of-line block here (inline files are <= 5000 bytes).
  const at = out.position;
  const buf = out.take(EROFS_BLOCK_SIZE);
  if (!buf) return;
  if (node.content) {
    buf.set(node.content.subarray(0, Math.min(node.content.length, EROFS_BLOCK_SIZE)), at);
  } else if (node.payloadSize <= EROFS_BLOCK_SIZE) {
    codec.write(buf, at, node.payload!, node.payloadSize);
  } else {
    buf.set(codec.bytes(node.payload!).subarray(0, EROFS_BLOCK_SIZE), at);
  }
}

function layoutImage(t: PreparedTree, out: ImageSink, known: Addresses | null): Addresses {
  let at = out.position;
  let buf = out.take(COMPOSEFS_HEADER_SIZE);
  if (buf) {
    writeStruct(COMPOSEFS_HEADER, buf, at, {
      magic: COMPOSEFS_MAGIC,
      version: COMPOSEFS_HEADER_VERSION,
      flags: t.hasAcl ? COMPOSEFS_FLAG_HAS_ACL : 0,
      composefsVersion: t.version,
    });
  }
  out.zeros(EROFS_SUPER_OFFSET - COMPOSEFS_HEADER_SIZE);
  const root = t.nodes[0]!;
  at = out.position;
  buf = out.take(EROFS_SUPER_SIZE);
  if (buf && known) {
    writeStruct(SUPERBLOCK, buf, at, {
      magic: EROFS_SUPER_MAGIC,
      checksum: 0,
      featureCompat: EROFS_FEATURE_COMPAT_MTIME | EROFS_FEATURE_COMPAT_XATTR_FILTER,
      blockSizeBits: EROFS_BLOCK_BITS,
      extSlots: 0,
      rootNid: root.nid,
      inodeCount: BigInt(t.nodes.length),
      buildTime: BigInt(t.minMtimeSec),
      buildTimeNsec: t.minMtimeNsec,
      blocks: known.dataStart / EROFS_BLOCK_SIZE + known.dataBlocks,
      metaBlockAddr: Math.floor((EROFS_SUPER_OFFSET + EROFS_SUPER_SIZE) / EROFS_BLOCK_SIZE),
      xattrBlockAddr: Math.floor(known.inodesEnd / EROFS_BLOCK_SIZE),
      featureIncompat: 0,
    });
  }
  // nids count 32-byte slots from the start of the metadata block.
  const metaStart = Math.floor((EROFS_SUPER_OFFSET + EROFS_SUPER_SIZE) / EROFS_BLOCK_SIZE) * EROFS_BLOCK_SIZE;
  let nextBlock = known ? known.dataStart / EROFS_BLOCK_SIZE : 0;
  let dataBlocks = 0;
  for (const node of t.nodes) {
    initialDataShape(node);
    node.compact = fitsCompactInode(node, t);
    const inodeSize = node.compact ? EROFS_INODE_COMPACT_SIZE : EROFS_INODE_EXTENDED_SIZE;
    align(out, EROFS_SLOT_SIZE);
    out.zeros(tailPadding(node, out.position, inodeSize));
    const nid = (out.position - metaStart) / EROFS_SLOT_SIZE;
    if (known && nid !== node.nid) throw new Error(`composefs writer: layout changed between passes (inode ${node.ino})`);
    node.nid = nid;
    const blockAddr = node.dataBlocks > 0 ? nextBlock : 0;
    nextBlock += node.dataBlocks;
    dataBlocks += node.dataBlocks;
    at = out.position;
    buf = out.take(inodeSize + node.xattrAreaSize + node.tailSize);
    if (buf && known) encodeInodeRecord(buf, at, node, known, blockAddr, t.codec);
  }
  align(out, EROFS_SLOT_SIZE);
  const inodesEnd = out.position;
  for (const x of t.sharedXattrs) {
    at = out.position;
    buf = out.take(x.entrySize);
    if (buf) encodeXattrEntry(buf, at, x);
  }
  align(out, EROFS_BLOCK_SIZE);
  const dataStart = out.position;
  for (const node of t.nodes) writeDataBlocks(out, node, t.codec);
  return { inodesEnd, dataStart, dataBlocks, totalSize: out.position };
}

/** The image bytes of a manifest (checked here; throws InvalidManifestError). */
export function writeImage(manifest: Manifest, options: WriteOptions = {}): Buffer {
  checkManifest(manifest);
  const tree = prepareTree(manifest, options);
  const measured = layoutImage(tree, new MeasuringSink(), null);
  const image = Buffer.alloc(measured.totalSize);
  const emitted = layoutImage(tree, new BufferSink(image), measured);
  if (emitted.totalSize !== measured.totalSize || emitted.dataStart !== measured.dataStart) {
    throw new Error('composefs writer: the emitting pass disagrees with the measuring pass');
  }
  return image;
}
