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
import type { Entry, Manifest } from '../schema/types.generated.js';
import { InvalidManifestError } from '../manifest/errors.js';
import { checkManifest } from '../manifest/check.js';
import { MAX_XATTR_BUDGET, XATTR_BUDGET_HEADER, xattrBudgetCost } from '../manifest/limits.js';
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
  S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, erofsFileType, inodeFormat, writeComposefsHeader,
  writeDirent, writeInode, writeSuperBlock, writeXattrBodyHeader, writeXattrEntryHeader,
} from './format.js';
import { xxh32 } from './xxhash.js';

export interface WriteOptions {
  /** Lowest format version to write (default 0). */
  minVersion?: number;
  /** Highest format version allowed (default 1); used when the tree has whiteouts. */
  maxVersion?: number;
}

// ---- the tree the image holds ---------------------------------------------------

interface Xattr {
  key: Buffer;
  value: Buffer;
  /** Index of the short prefix stripped on disk, and the rest of the key. */
  prefixIndex: number;
  suffix: Buffer;
  /** Byte offset in the shared xattr area, or -1 when stored in the inode. */
  sharedOffset: number;
  /** Key and base64 value: equal xattrs of different inodes share one on-disk entry. */
  identity: string;
}

interface Child {
  name: Buffer;
  node: Node;
  /** ".", ".." and hardlinks name a node that lives elsewhere in the tree. */
  isLink: boolean;
}

interface Node {
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtimeSec: number;
  mtimeNsec: number;
  /** st_size: the file size for regular files, the target length for symlinks. */
  size: number;
  rdev: number;
  xattrs: Xattr[];
  /** Xattr bytes as composefs budgets them (it does not recount renamed keys). */
  xattrBudget: number;
  children: Child[];
  parent: Node;
  /** Symlink target, or the backing path of a regular file. */
  payload: Buffer | null;
  content: Buffer | null;
  digest: Buffer | null;
  /** Where the entry came from, for error messages. */
  pointer: string;
  // Set by numbering and layout:
  ino: number;
  nid: number;
  compact: boolean;
  xattrAreaSize: number;
  sharedCount: number;
  dataBlocks: number;
  tailSize: number;
  /** Chunk geometry of an external file, computed once. */
  chunkBits: number;
  chunkCount: number;
  /** Directory entries split into blocks, computed once the children are final. */
  chunks: DirentChunk[];
}

interface DirentChunk {
  first: number;
  count: number;
  bytes: number;
}

const typeModes: Record<Exclude<Entry['type'], 'hardlink'>, number> = {
  dir: S_IFDIR, file: S_IFREG, symlink: S_IFLNK, chardev: S_IFCHR, blockdev: S_IFBLK,
  fifo: S_IFIFO, socket: S_IFSOCK, whiteout: S_IFCHR,
};

function isType(node: Node, type: number): boolean {
  return (node.mode & S_IFMT) === type;
}


interface KeyInfo {
  key: Buffer;
  prefixIndex: number;
  suffix: Buffer;
  text: string;
}

const keyInfos = new Map<string, KeyInfo>();

/** How a key is stored: the index of its short prefix and the rest (cached: keys repeat). */
function keyInfo(key: Buffer): KeyInfo {
  const text = key.toString('latin1');
  let info = keyInfos.get(text);
  if (info) return info;
  info = { key, prefixIndex: 0, suffix: key, text };
  for (const [prefix, index] of EROFS_XATTR_WRITE_PREFIXES) {
    if (text.startsWith(prefix)) {
      info = { key, prefixIndex: index, suffix: key.subarray(prefix.length), text };
      break;
    }
  }
  if (keyInfos.size < 10_000) keyInfos.set(text, info);
  return info;
}

function makeXattr(k: KeyInfo, value: Buffer, valueBase64 = value.toString('base64')): Xattr {
  return { key: k.key, value, prefixIndex: k.prefixIndex, suffix: k.suffix, sharedOffset: -1, identity: k.text + '\0' + valueBase64 };
}

/** Decoded keys and values, shared between the many entries that repeat them. */
class XattrCache {
  private readonly keys = new Map<string, KeyInfo>();
  private readonly values = new Map<string, Buffer>();
  key(text: string): KeyInfo {
    let k = this.keys.get(text);
    if (!k) this.keys.set(text, (k = keyInfo(Buffer.from(text, 'utf8'))));
    return k;
  }
  value(base64: string): Buffer {
    let b = this.values.get(base64);
    if (!b) this.values.set(base64, (b = Buffer.from(base64, 'base64')));
    return b;
  }
}

/** Sets or replaces an xattr, under the per-inode budget composefs applies. */
function setXattr(node: Node, keyText: string, value: Buffer): void {
  const key = Buffer.from(keyText, 'latin1');
  const existing = node.xattrs.findIndex((x) => x.key.equals(key));
  if (existing >= 0) {
    const old = node.xattrs[existing]!;
    node.xattrs.splice(existing, 1);
    node.xattrBudget = node.xattrs.length === 0 ? 0 : node.xattrBudget - xattrBudgetCost(old.key.length, old.value.length);
  }
  const cost = xattrBudgetCost(key.length, value.length) + (node.xattrs.length === 0 ? XATTR_BUDGET_HEADER : 0);
  if (node.xattrBudget + cost > MAX_XATTR_BUDGET) {
    throw new InvalidManifestError(
      `no room for the ${keyText} xattr the image needs: the xattrs would take ${node.xattrBudget + cost} bytes, at most ${MAX_XATTR_BUDGET}`,
      node.pointer,
    );
  }
  node.xattrs.push(makeXattr(keyInfo(key), value));
  node.xattrBudget += cost;
}

function newNode(pointer: string, parent: Node | null): Node {
  const node = {
    mode: 0, uid: 0, gid: 0, nlink: 1, mtimeSec: 0, mtimeNsec: 0, size: 0, rdev: 0,
    xattrs: [], xattrBudget: 0, children: [], parent: parent!, payload: null, content: null, digest: null, pointer,
    ino: 0, nid: 0, compact: false, xattrAreaSize: 0, sharedCount: 0, dataBlocks: 0, tailSize: 0,
    chunkBits: 0, chunkCount: 0, chunks: [],
  } as Node;
  if (!parent) node.parent = node;
  return node;
}

function nodeFromEntry(e: Exclude<Entry, { type: 'hardlink' }>, pointer: string, parent: Node | null, cache: XattrCache): Node {
  const node = newNode(pointer, parent);
  node.mode = typeModes[e.type] | e.mode;
  node.uid = e.uid;
  node.gid = e.gid;
  node.nlink = e.nlink ?? 0; // 0: 1 + incoming hardlinks, filled in by buildTree
  node.mtimeSec = e.mtime.sec;
  node.mtimeNsec = e.mtime.nsec;
  switch (e.type) {
    case 'file':
      node.size = e.size;
      if (e.inline !== undefined && e.size > 0) node.content = Buffer.from(e.inline, 'base64');
      if (e.digest !== undefined) node.digest = Buffer.from(e.digest, 'hex');
      if (e.backing !== undefined) node.payload = Buffer.from(e.backing, 'utf8');
      if (node.content === null && node.size > 0) {
        const c = chunking(node.size);
        node.chunkBits = c.chunkBits;
        node.chunkCount = c.chunkCount;
      }
      break;
    case 'symlink':
      node.payload = Buffer.from(e.target, 'utf8');
      node.size = node.payload.length;
      break;
    case 'chardev':
    case 'blockdev':
      node.rdev = e.rdev;
      node.size = e.size ?? 0;
      break;
    case 'dir':
      break; // a directory's size is its dirents
    default:
      node.size = e.size ?? 0;
  }
  if (e.xattrs) {
    for (const x of e.xattrs) {
      const key = cache.key(x.key);
      const value = cache.value(x.value);
      node.xattrBudget += xattrBudgetCost(key.key.length, value.length) + (node.xattrs.length === 0 ? XATTR_BUDGET_HEADER : 0);
      node.xattrs.push(makeXattr(key, value, x.value));
    }
  }
  return node;
}

function nameOf(path: string): Buffer {
  return Buffer.from(path.slice(path.lastIndexOf('/') + 1), 'utf8');
}

/** Builds the node tree; manifest order is already sorted, so children come sorted. */
function buildTree(manifest: Manifest): Node {
  const entries = manifest.entries;
  const cache = new XattrCache();
  const root = nodeFromEntry(entries[0] as Exclude<Entry, { type: 'hardlink' }>, '/entries/0', null, cache);
  const nodes: Array<Node | undefined> = [root];
  const stack: Array<{ path: string; node: Node }> = [{ path: '/', node: root }];
  const links: Array<{ parent: Node; child: Child; target: string }> = [];
  for (let i = 1; i < entries.length; i++) {
    const e = entries[i]!;
    const parentPath = e.path.slice(0, Math.max(1, e.path.lastIndexOf('/')));
    while (stack[stack.length - 1]!.path !== parentPath) stack.pop();
    const parent = stack[stack.length - 1]!.node;
    if (e.type === 'hardlink') {
      const child: Child = { name: nameOf(e.path), node: root, isLink: true };
      parent.children.push(child);
      links.push({ parent, child, target: e.target });
      nodes.push(undefined);
      continue;
    }
    const node = nodeFromEntry(e, `/entries/${i}`, parent, cache);
    parent.children.push({ name: nameOf(e.path), node, isLink: false });
    if (e.type === 'dir') stack.push({ path: e.path, node });
    nodes.push(node);
  }
  const incoming = new Map<Node, number>();
  if (links.length > 0) {
    const byPath = new Map<string, Node>();
    entries.forEach((e, i) => nodes[i] && byPath.set(e.path, nodes[i]!));
    for (const l of links) {
      l.child.node = byPath.get(l.target)!;
      incoming.set(l.child.node, (incoming.get(l.child.node) ?? 0) + 1);
    }
  }
  for (const n of nodes) if (n && n.nlink === 0) n.nlink = 1 + (incoming.get(n) ?? 0);
  return root;
}

/** Inserts a child keeping strcmp order of names. */
function insertChild(dir: Node, child: Child): void {
  let lo = 0;
  let hi = dir.children.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (Buffer.compare(dir.children[mid]!.name, child.name) < 0) lo = mid + 1;
    else hi = mid;
  }
  dir.children.splice(lo, 0, child);
}

function hasChild(dir: Node, name: Buffer): boolean {
  return dir.children.some((c) => c.name.equals(name));
}

function bitLength(n: number): number {
  return n >= 2 ** 32 ? 32 + bitLength(Math.floor(n / 2 ** 32)) : 32 - Math.clz32(n);
}

function chunking(size: number): { chunkBits: number; chunkCount: number } {
  // As few chunks as possible, each at least a block and at most 2^(12+31).
  const bitsNeeded = size <= 1 ? 1 : bitLength(size - 1);
  const chunkBits = Math.min(Math.max(bitsNeeded, EROFS_BLOCK_BITS), EROFS_BLOCK_BITS + EROFS_CHUNK_FORMAT_BLKBITS_MASK);
  return { chunkBits, chunkCount: Math.ceil(size / 2 ** chunkBits) };
}

function isExternalFile(node: Node): boolean {
  return isType(node, S_IFREG) && node.size > 0 && node.content === null;
}

const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');
const EMPTY = Buffer.alloc(0);

/** The overlayfs view: escape user overlay xattrs, describe external files and whiteouts. */
function addOverlayXattrs(node: Node, version: number): void {
  for (const x of node.xattrs) {
    if (x.key.length >= OVERLAY_PREFIX.length && x.key.toString('latin1', 0, OVERLAY_PREFIX.length) === OVERLAY_PREFIX) {
      // Renamed in place; composefs keeps the budget of the old name.
      const renamed = Buffer.concat([Buffer.from(OVERLAY_ESCAPE_PREFIX, 'latin1'), x.key.subarray(OVERLAY_PREFIX.length)]);
      Object.assign(x, makeXattr(keyInfo(renamed), x.value));
    }
  }
  if (isExternalFile(node)) {
    let metacopy = EMPTY;
    if (node.digest) {
      metacopy = Buffer.alloc(4 + node.digest.length);
      metacopy[1] = metacopy.length;
      metacopy[3] = FSVERITY_HASH_ALG_SHA256;
      node.digest.copy(metacopy, 4);
    }
    setXattr(node, OVERLAY_METACOPY, metacopy);
    if (node.payload && node.payload.length > 0) {
      setXattr(node, OVERLAY_REDIRECT, Buffer.concat([Buffer.from('/'), node.payload]));
    }
  }
  if (isType(node, S_IFCHR) && node.rdev === 0) {
    // An overlay whiteout inside the image would act on the image's own
    // layer; stored escaped, overlayfs presents it to the upper mount.
    node.size = 0;
    node.mode = S_IFREG | (node.mode & ~S_IFMT);
    setXattr(node, OVERLAY_ESCAPED_WHITEOUT, EMPTY);
    setXattr(node, OVERLAY_USER_WHITEOUT, EMPTY);
    setXattr(node.parent, OVERLAY_ESCAPED_WHITEOUTS, EMPTY);
    setXattr(node.parent, OVERLAY_USER_WHITEOUTS, EMPTY);
    if (version >= 1) {
      setXattr(node.parent, OVERLAY_ESCAPED_OPAQUE, Buffer.from('x'));
      setXattr(node.parent, OVERLAY_USER_OPAQUE, Buffer.from('x'));
    }
  }
}

function rewriteForErofs(node: Node, version: number): void {
  if (isExternalFile(node) && node.chunkCount > COMPOSEFS_MAX_CHUNKS) {
    throw new InvalidManifestError(`file size ${node.size} is too large for composefs`, node.pointer);
  }
  addOverlayXattrs(node, version);
  if (!isType(node, S_IFDIR)) return;
  if (!hasChild(node, DOT)) insertChild(node, { name: DOT, node, isLink: true });
  if (!hasChild(node, DOTDOT)) insertChild(node, { name: DOTDOT, node: node.parent, isLink: true });
  for (const c of node.children) if (!c.isLink) rewriteForErofs(c.node, version);
}

const HEX_DIGITS = '0123456789abcdef';

/** The character devices 0:0 named 00..ff that hide the object store's fan-out. */
function addRootWhiteouts(root: Node): void {
  const selinux = root.xattrs.find((x) => x.key.toString('latin1') === 'security.selinux');
  for (let i = 0; i <= 255; i++) {
    const name = Buffer.from(HEX_DIGITS[i >> 4]! + HEX_DIGITS[i & 15]!);
    if (hasChild(root, name)) continue;
    const w = newNode(root.pointer, root);
    w.mode = S_IFCHR | 0o644;
    w.uid = root.uid;
    w.gid = root.gid;
    w.mtimeSec = root.mtimeSec;
    w.mtimeNsec = root.mtimeNsec;
    if (selinux) setXattr(w, 'security.selinux', selinux.value);
    insertChild(root, { name, node: w, isLink: false });
  }
}

function usesNewWhiteoutFormat(root: Node): boolean {
  const stack = [root];
  while (stack.length > 0) {
    const n = stack.pop()!;
    if (isType(n, S_IFCHR) && n.rdev === 0) return true;
    for (const c of n.children) if (!c.isLink) stack.push(c.node);
  }
  return false;
}

interface PreparedTree {
  /** Breadth-first: the inode order. */
  nodes: Node[];
  version: number;
  hasAcl: boolean;
  minMtimeSec: number;
  minMtimeNsec: number;
  sharedXattrs: Xattr[];
  sharedXattrBytes: number;
}

function compareXattrKeys(a: Xattr, b: Xattr): number {
  return Buffer.compare(a.key, b.key);
}

function xattrEntrySize(x: Xattr): number {
  return roundUp(EROFS_XATTR_ENTRY_SIZE + x.suffix.length + x.value.length, 4);
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
      for (const c of node.children) if (!c.isLink && isType(c.node, S_IFDIR)) subdirs++;
      node.nlink = 2 + subdirs;
    }
    node.xattrs.sort(compareXattrKeys);
    if (node.mtimeSec < minSec || (node.mtimeSec === minSec && node.mtimeNsec < minNsec)) {
      minSec = node.mtimeSec;
      minNsec = node.mtimeNsec;
    }
    for (const x of node.xattrs) {
      const k = x.key.toString('latin1');
      if (k === 'system.posix_acl_access' || k === 'system.posix_acl_default') hasAcl = true;
    }
    for (const c of node.children) if (!c.isLink) nodes.push(c.node);
  }
  return { nodes, hasAcl, minMtimeSec: minSec, minMtimeNsec: minNsec };
}

/** Xattrs used by more than one inode go to the shared area, in a canonical order. */
function shareXattrs(nodes: Node[]): { sharedXattrs: Xattr[]; sharedXattrBytes: number } {
  const counts = new Map<string, { xattr: Xattr; count: number; offset: number }>();
  for (const n of nodes) {
    for (const x of n.xattrs) {
      const id = x.identity;
      const c = counts.get(id);
      if (c) c.count++;
      else counts.set(id, { xattr: x, count: 1, offset: -1 });
    }
  }
  // Descending by key, then by value length, then by value bytes.
  const shared = [...counts.values()].filter((c) => c.count > 1);
  shared.sort((a, b) => {
    const byKey = Buffer.compare(b.xattr.key, a.xattr.key);
    if (byKey !== 0) return byKey;
    if (a.xattr.value.length !== b.xattr.value.length) return b.xattr.value.length - a.xattr.value.length;
    return Buffer.compare(b.xattr.value, a.xattr.value);
  });
  let offset = 0;
  for (const s of shared) {
    s.offset = offset;
    offset += xattrEntrySize(s.xattr);
  }
  for (const n of nodes) {
    let sharedHere = 0;
    for (const x of n.xattrs) {
      const c = counts.get(x.identity)!;
      if (c.offset >= 0 && sharedHere < EROFS_XATTR_MAX_SHARED) {
        x.sharedOffset = c.offset;
        sharedHere++;
      } else {
        x.sharedOffset = -1;
      }
    }
    n.sharedCount = sharedHere;
    let inlineBytes = 0;
    for (const x of n.xattrs) if (x.sharedOffset < 0) inlineBytes += xattrEntrySize(x);
    n.xattrAreaSize = sharedHere === 0 && inlineBytes === 0 ? 0 : roundUp(EROFS_XATTR_HEADER_SIZE + sharedHere * 4 + inlineBytes, 4);
  }
  return { sharedXattrs: shared.map((s) => s.xattr), sharedXattrBytes: offset };
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
  const root = buildTree(manifest);
  // Format 1 changed how whiteouts are marked; use it only when needed.
  const version = min < 1 && max >= 1 && usesNewWhiteoutFormat(root) ? 1 : min;
  rewriteForErofs(root, version);
  setXattr(root, OVERLAY_OPAQUE, Buffer.from('y'));
  addRootWhiteouts(root);
  const numbered = numberInodes(root);
  for (const n of numbered.nodes) if (isType(n, S_IFDIR)) n.chunks = direntChunks(n);
  return { ...numbered, version, ...shareXattrs(numbered.nodes) };
}

// ---- layout, run once to measure and once to emit -------------------------------

/** Where the layout writes. */
interface ImageSink {
  readonly position: number;
  bytes(data: Uint8Array): void;
  /** Skips n bytes (zeros). */
  zeros(n: number): void;
  fill(n: number, byte: number): void;
  /** A fixed-size structure, encoded in place. */
  struct(size: number, encode: (buf: Buffer, offset: number) => void): void;
}

class MeasuringSink implements ImageSink {
  position = 0;
  bytes(data: Uint8Array): void { this.position += data.length; }
  zeros(n: number): void { this.position += n; }
  fill(n: number): void { this.position += n; }
  struct(size: number): void { this.position += size; }
}

class BufferSink implements ImageSink {
  position = 0;
  constructor(private readonly buf: Buffer) {}
  bytes(data: Uint8Array): void {
    this.buf.set(data, this.position);
    this.position += data.length;
  }
  zeros(n: number): void { this.position += n; } // the buffer starts zeroed
  fill(n: number, byte: number): void {
    this.buf.fill(byte, this.position, this.position + n);
    this.position += n;
  }
  struct(size: number, encode: (buf: Buffer, offset: number) => void): void {
    encode(this.buf, this.position);
    this.position += size;
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
  let first = 0;
  let bytes = 0;
  node.children.forEach((c, i) => {
    const len = EROFS_DIRENT_SIZE + c.name.length;
    if (bytes + len > EROFS_BLOCK_SIZE) {
      chunks.push({ first, count: i - first, bytes });
      first = i;
      bytes = 0;
    }
    bytes += len;
  });
  chunks.push({ first, count: node.children.length - first, bytes });
  return chunks;
}

/** Blocks and inline tail before placement: a directory inlines at most half a block. */
function initialDataShape(node: Node): void {
  node.dataBlocks = 0;
  node.tailSize = 0;
  if (isType(node, S_IFDIR)) {
    const chunks = node.chunks;
    const last = chunks[chunks.length - 1]!;
    node.dataBlocks = chunks.length - 1;
    node.tailSize = last.bytes;
    if (node.tailSize > EROFS_BLOCK_SIZE / 2) {
      node.dataBlocks++;
      node.tailSize = 0;
    }
  } else if (isType(node, S_IFLNK)) {
    node.tailSize = node.payload!.length;
  } else if (isType(node, S_IFREG) && node.size > 0) {
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
  for (const x of node.xattrs) {
    const bit = xxh32(x.suffix, (EROFS_XATTR_FILTER_SEED + x.prefixIndex) >>> 0) & (EROFS_XATTR_FILTER_BITS - 1);
    filter |= 1 << bit;
  }
  return (EROFS_XATTR_FILTER_DEFAULT & ~filter) >>> 0;
}

function writeXattrEntry(out: ImageSink, x: Xattr): void {
  out.struct(EROFS_XATTR_ENTRY_SIZE, (b, o) => writeXattrEntryHeader(b, o, { nameLength: x.suffix.length, nameIndex: x.prefixIndex, valueSize: x.value.length }));
  out.bytes(x.suffix);
  out.bytes(x.value);
  align(out, 4);
}

function writeDirentChunk(out: ImageSink, node: Node, first: number, count: number, alignTo: number): void {
  let nameOffset = count * EROFS_DIRENT_SIZE;
  for (let i = first; i < first + count; i++) {
    const c = node.children[i]!;
    const nid = c.node.nid;
    const at = nameOffset;
    out.struct(EROFS_DIRENT_SIZE, (b, o) => writeDirent(b, o, { nid: BigInt(nid), nameOffset: at, fileType: erofsFileType(c.node.mode) }));
    nameOffset += c.name.length;
  }
  for (let i = first; i < first + count; i++) out.bytes(node.children[i]!.name);
  align(out, alignTo);
}

function writeInodeRecord(out: ImageSink, node: Node, t: PreparedTree, known: Addresses | null, blockAddr: number): void {
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
    size = node.payload!.length;
    if (node.dataBlocks > 0) u = blockAddr;
  } else if (type === S_IFCHR || type === S_IFBLK) {
    u = node.rdev;
  }
  const icount = node.xattrAreaSize === 0 ? 0 : (node.xattrAreaSize - EROFS_XATTR_HEADER_SIZE) / 4 + 1;
  out.struct(node.compact ? EROFS_INODE_COMPACT_SIZE : EROFS_INODE_EXTENDED_SIZE, (b, o) =>
    writeInode(b, o, {
      format: inodeFormat(inodeLayout, dataLayout),
      xattrIcount: icount,
      mode: node.mode,
      nlink: node.nlink,
      size: BigInt(size),
      u,
      chunkFormat,
      ino: node.ino,
      uid: node.uid,
      gid: node.gid,
      mtime: BigInt(node.mtimeSec),
      mtimeNsec: node.mtimeNsec,
    }),
  );
  if (node.xattrAreaSize > 0) {
    out.struct(EROFS_XATTR_HEADER_SIZE, (b, o) => writeXattrBodyHeader(b, o, { nameFilter: xattrNameFilter(node), sharedCount: node.sharedCount }));
    const sharedBase = known ? known.inodesEnd % EROFS_BLOCK_SIZE : 0;
    for (const x of node.xattrs) {
      if (x.sharedOffset < 0) continue;
      const id = (sharedBase + x.sharedOffset) / 4;
      out.struct(4, (b, o) => b.writeUInt32LE(id, o));
    }
    for (const x of node.xattrs) if (x.sharedOffset < 0) writeXattrEntry(out, x);
  }
  if (node.tailSize === 0) return;
  if (type === S_IFDIR) {
    const last = node.chunks[node.chunks.length - 1]!;
    writeDirentChunk(out, node, last.first, last.count, 1);
  } else if (type === S_IFLNK) {
    out.bytes(node.payload!);
  } else if (node.content) {
    out.bytes(node.content.subarray(node.size - node.tailSize));
  } else {
    out.fill(node.tailSize, 0xff); // chunk pointers, all EROFS_NULL_ADDR
  }
}

/** Full blocks of a node: directory blocks, or the first block of content. */
function writeDataBlocks(out: ImageSink, node: Node): void {
  if (node.dataBlocks === 0) return;
  if (isType(node, S_IFDIR)) {
    // Chunks beyond the block count stayed inline as the tail.
    for (let i = 0; i < node.dataBlocks; i++) {
      const c = node.chunks[i]!;
      writeDirentChunk(out, node, c.first, c.count, EROFS_BLOCK_SIZE);
    }
    return;
  }
  if (isExternalFile(node)) {
    out.fill(EROFS_BLOCK_SIZE, 0xff); // a block of null chunk pointers
    return;
  }
  // composefs stores at most one out-of-line block here (inline files are <= 5000 bytes).
  const source = node.content ?? node.payload!;
  out.bytes(source.subarray(0, Math.min(source.length, EROFS_BLOCK_SIZE)));
  align(out, EROFS_BLOCK_SIZE);
}

function layoutImage(t: PreparedTree, out: ImageSink, known: Addresses | null): Addresses {
  out.struct(COMPOSEFS_HEADER_SIZE, (b, o) =>
    writeComposefsHeader(b, o, {
      magic: COMPOSEFS_MAGIC,
      version: COMPOSEFS_HEADER_VERSION,
      flags: t.hasAcl ? COMPOSEFS_FLAG_HAS_ACL : 0,
      composefsVersion: t.version,
    }),
  );
  out.zeros(EROFS_SUPER_OFFSET - COMPOSEFS_HEADER_SIZE);
  const root = t.nodes[0]!;
  out.struct(EROFS_SUPER_SIZE, (b, o) =>
    writeSuperBlock(b, o, {
      magic: EROFS_SUPER_MAGIC,
      checksum: 0,
      featureCompat: EROFS_FEATURE_COMPAT_MTIME | EROFS_FEATURE_COMPAT_XATTR_FILTER,
      blockSizeBits: EROFS_BLOCK_BITS,
      extSlots: 0,
      rootNid: root.nid,
      inodeCount: BigInt(t.nodes.length),
      buildTime: BigInt(t.minMtimeSec),
      buildTimeNsec: t.minMtimeNsec,
      blocks: known ? known.dataStart / EROFS_BLOCK_SIZE + known.dataBlocks : 0,
      metaBlockAddr: Math.floor((EROFS_SUPER_OFFSET + EROFS_SUPER_SIZE) / EROFS_BLOCK_SIZE),
      xattrBlockAddr: known ? Math.floor(known.inodesEnd / EROFS_BLOCK_SIZE) : 0,
      featureIncompat: 0,
    }),
  );
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
    writeInodeRecord(out, node, t, known, blockAddr);
  }
  align(out, EROFS_SLOT_SIZE);
  const inodesEnd = out.position;
  for (const x of t.sharedXattrs) writeXattrEntry(out, x);
  align(out, EROFS_BLOCK_SIZE);
  const dataStart = out.position;
  for (const node of t.nodes) writeDataBlocks(out, node);
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

