// The composefs image writer: a pure, deterministic function from a checked
// manifest to the bytes of an EROFS image, identical to what mkcomposefs 1.0.8
// writes for the same tree (`--from-file`, same min/max format version).
//
// The whole plan: build the image's tree (tree.ts: typed inodes, overlay
// xattrs, numbering, shared xattrs), then lay it out twice through one small
// Output interface: a measuring pass that only advances a position and
// records in the Layout where every inode and data block lands, and an
// emitting pass that runs the same code again and writes each byte once into
// a buffer of exactly the measured size, using the addresses the first pass
// found. Offsets live only in the Layout, never on the inodes; nothing is
// patched afterwards.
import type { Manifest } from '../schema/types.generated.js';
import { InvalidManifestError } from '../manifest/errors.js';
import { checkManifest, type CheckedManifest } from '../manifest/check.js';
import type { TextCodec } from '../manifest/text.js';
import {
  COMPOSEFS_DEFAULT_MAX_VERSION, COMPOSEFS_DEFAULT_MIN_VERSION, COMPOSEFS_FLAG_HAS_ACL, COMPOSEFS_HEADER,
  COMPOSEFS_HEADER_SIZE, COMPOSEFS_HEADER_VERSION, COMPOSEFS_MAGIC, COMPOSEFS_VERSION_MAX, DIRENT, EROFS_BLOCK_BITS,
  EROFS_BLOCK_SIZE, EROFS_DIRENT_SIZE, EROFS_FEATURE_COMPAT_MTIME, EROFS_FEATURE_COMPAT_XATTR_FILTER,
  EROFS_INODE_CHUNK_BASED, EROFS_INODE_COMPACT_SIZE, EROFS_INODE_EXTENDED_SIZE, EROFS_INODE_FLAT_INLINE,
  EROFS_INODE_FLAT_PLAIN, EROFS_INODE_LAYOUT_COMPACT, EROFS_INODE_LAYOUT_EXTENDED, EROFS_SLOT_SIZE, EROFS_SUPER_MAGIC,
  EROFS_SUPER_OFFSET, EROFS_SUPER_SIZE, EROFS_XATTR_FILTER_DEFAULT, EROFS_XATTR_HEADER_SIZE, INODE_COMPACT,
  INODE_EXTENDED, SUPERBLOCK, XATTR_BODY_HEADER, erofsFileType, inodeFormat, writeStruct,
} from './format.js';
import { Kind, Link, buildTree, buildTreeOf, isSharedHere, sharedXattrCount, xattrAreaBytes, type Directory, type ImageTree, type Inode, type TreeSource } from './tree.js';
import type { DigestPool } from './digests.js';
import { encodeXattrEntry, roundUp } from './xattrs.js';

export interface WriteOptions {
  /** Lowest format version to write (default 0). */
  minVersion?: number;
  /** Highest format version allowed (default 1); used when the tree has whiteouts. */
  maxVersion?: number;
}

// ---- where the layout writes --------------------------------------------------

/** The two passes see the image through this: one measures, one writes. */
interface Output {
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

class Measure implements Output {
  position = 0;
  take(size: number): null {
    this.position += size;
    return null;
  }
  zeros(n: number): void { this.position += n; }
  fill(n: number): void { this.position += n; }
}

class Emit implements Output {
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

function align(out: Output, to: number): void {
  out.zeros(roundUp(out.position, to) - out.position);
}

// ---- the layout: every offset and size the image's bytes depend on ---------------

/** Where things land, per inode (indexed by ino) and for the image; filled by the measuring pass. */
class Layout {
  /** 32-byte slot of the inode from the start of the metadata block. */
  readonly nid: Uint32Array;
  readonly compact: Uint8Array;
  /** Bytes of the xattr area, and how many of its xattrs are shared references. */
  readonly xattrSize: Uint32Array;
  readonly sharedCount: Uint8Array;
  /** Full data blocks, and bytes of the tail stored right after the inode. */
  readonly dataBlocks: Uint32Array;
  readonly tailSize: Uint32Array;
  /** Each directory's dirent blocks, by ino. */
  private readonly dirents: Array<DirentBlocks | undefined>;
  inodesEnd = 0;
  dataStart = 0;
  totalBlocks = 0;
  size = 0;

  constructor(tree: ImageTree) {
    const n = tree.inodes.length;
    this.nid = new Uint32Array(n);
    this.compact = new Uint8Array(n);
    this.xattrSize = new Uint32Array(n);
    this.sharedCount = new Uint8Array(n);
    this.dataBlocks = new Uint32Array(n);
    this.tailSize = new Uint32Array(n);
    this.dirents = new Array(n);
    for (let i = 0; i < n; i++) {
      const inode = tree.inodes[i]!;
      if (inode.xattrs.length === 0) continue;
      this.sharedCount[i] = sharedXattrCount(inode);
      this.xattrSize[i] = xattrAreaBytes(inode);
    }
  }

  /** A directory's dirent blocks, found once for both passes. */
  direntsOf(dir: Directory, codec: TextCodec): DirentBlocks {
    return (this.dirents[dir.ino] ??= direntBlocks(dir, codec));
  }
}

/** A directory's entries split into blocks: the index of each block's first entry, and the last block's bytes. */
interface DirentBlocks {
  starts: number[];
  lastBytes: number;
}

function direntBlocks(dir: Directory, codec: TextCodec): DirentBlocks {
  const starts = [0];
  const entries = dir.entries;
  let bytes = 0;
  for (let i = 0; i < entries.length; i++) {
    const len = EROFS_DIRENT_SIZE + codec.length(entries[i]!.name);
    if (bytes + len > EROFS_BLOCK_SIZE) {
      starts.push(i);
      bytes = 0;
    }
    bytes += len;
  }
  return { starts, lastBytes: bytes };
}

/** Blocks and inline tail before placement: a directory or an inline file inlines at most half a block. */
function initialDataShape(inode: Inode, blocks: DirentBlocks | null): { dataBlocks: number; tailSize: number } {
  let dataBlocks = 0;
  let tailSize = 0;
  switch (inode.kind) {
    case Kind.Directory:
      dataBlocks = blocks!.starts.length - 1;
      tailSize = blocks!.lastBytes;
      break;
    case Kind.InlineFile:
      dataBlocks = Math.floor(inode.size / EROFS_BLOCK_SIZE);
      tailSize = inode.size % EROFS_BLOCK_SIZE;
      break;
    case Kind.ExternalFile:
      return { dataBlocks: 0, tailSize: inode.chunkCount * 4 };
    case Kind.Symlink:
      return { dataBlocks: 0, tailSize: inode.size };
    default:
      return { dataBlocks: 0, tailSize: 0 };
  }
  if (tailSize > EROFS_BLOCK_SIZE / 2) return { dataBlocks: dataBlocks + 1, tailSize: 0 };
  return { dataBlocks, tailSize };
}

/** st_size as the inode stores it. */
function storedSize(inode: Inode, dataBlocks: number, tailSize: number): number {
  if (inode.kind === Kind.Directory) return dataBlocks * EROFS_BLOCK_SIZE + tailSize;
  return inode.kind === Kind.Special ? 0 : inode.size;
}

function fitsCompactInode(inode: Inode, t: ImageTree, dataBlocks: number, tailSize: number): boolean {
  if (inode.mtimeSec !== t.minMtimeSec || inode.mtimeNsec !== t.minMtimeNsec) return false;
  if (inode.nlink > 0xffff || inode.uid > 0xffff || inode.gid > 0xffff) return false;
  // A device, fifo or socket stores size 0, but its st_size decides, as in mkcomposefs.
  const size = inode.kind === Kind.Directory ? storedSize(inode, dataBlocks, tailSize) : inode.size;
  return size <= 0xffffffff;
}

/**
 * Where an inode of `recordSize` bytes before its tail goes, at or after
 * `pos`, so that its inline tail does not cross a block boundary; when no
 * padding helps, the tail moves out to a data block.
 */
function placeInode(inode: Inode, pos: number, nonTail: number, shape: { dataBlocks: number; tailSize: number }): number {
  const total = nonTail + shape.tailSize;
  if (inode.kind === Kind.Symlink) {
    // A symlink keeps inode and target in one block if it can.
    const startBlock = Math.floor(pos / EROFS_BLOCK_SIZE);
    const endBlock = Math.floor((pos + total - 1) / EROFS_BLOCK_SIZE);
    if (Math.floor(total / EROFS_BLOCK_SIZE) > 0) {
      shape.dataBlocks++;
      shape.tailSize = 0;
    }
    return startBlock !== endBlock ? roundUp(pos, EROFS_BLOCK_SIZE) : pos;
  }
  const remainder = EROFS_BLOCK_SIZE - ((pos + nonTail) % EROFS_BLOCK_SIZE);
  if (remainder >= shape.tailSize) return pos;
  const pad = roundUp(remainder, EROFS_SLOT_SIZE);
  if (shape.tailSize <= EROFS_BLOCK_SIZE - ((pos + nonTail + pad) % EROFS_BLOCK_SIZE)) return pos + pad;
  shape.dataBlocks++;
  shape.tailSize = 0;
  return roundUp(pos, EROFS_BLOCK_SIZE);
}

// ---- encoding ----------------------------------------------------------------------

function xattrNameFilter(inode: Inode): number {
  let filter = 0;
  for (const x of inode.xattrs) filter |= 1 << x.key.filterBit;
  return (EROFS_XATTR_FILTER_DEFAULT & ~filter) >>> 0;
}

/** The dirents and then the names of entries [first, end) at `at`. */
function encodeDirents(buf: Buffer, at: number, dir: Directory, first: number, end: number, layout: Layout, codec: TextCodec): void {
  const start = at;
  let nameAt = at + (end - first) * EROFS_DIRENT_SIZE;
  for (let i = first; i < end; i++) {
    const entry = dir.entries[i]!;
    const target = entry instanceof Link ? entry.target : entry;
    DIRENT.nid.write(buf, at, layout.nid[target.ino]!);
    DIRENT.nameOffset.write(buf, at, nameAt - start);
    DIRENT.fileType.write(buf, at, erofsFileType(target.mode));
    const size = codec.length(entry.name);
    codec.write(buf, nameAt, entry.name, size);
    at += EROFS_DIRENT_SIZE;
    nameAt += size;
  }
}

/** The inode itself, in the layout the measuring pass chose. */
function encodeInode(buf: Buffer, at: number, inode: Inode, layout: Layout, blockAddr: number): void {
  const ino = inode.ino;
  const dataBlocks = layout.dataBlocks[ino]!;
  const tailSize = layout.tailSize[ino]!;
  let dataLayout = tailSize > 0 ? EROFS_INODE_FLAT_INLINE : EROFS_INODE_FLAT_PLAIN;
  let u = dataBlocks > 0 ? blockAddr : 0;
  if (inode.kind === Kind.ExternalFile) {
    dataLayout = EROFS_INODE_CHUNK_BASED;
    u = ((u & 0xffff0000) | (inode.chunkBits - EROFS_BLOCK_BITS)) >>> 0; // the chunk format is the union's low half
  } else if (inode.kind === Kind.Special) {
    u = inode.rdev;
  }
  const compact = layout.compact[ino] === 1;
  const xattrSize = layout.xattrSize[ino]!;
  const F = compact ? INODE_COMPACT : INODE_EXTENDED;
  F.format.write(buf, at, inodeFormat(compact ? EROFS_INODE_LAYOUT_COMPACT : EROFS_INODE_LAYOUT_EXTENDED, dataLayout));
  F.xattrIcount.write(buf, at, xattrSize === 0 ? 0 : (xattrSize - EROFS_XATTR_HEADER_SIZE) / 4 + 1);
  F.mode.write(buf, at, inode.mode);
  F.nlink.write(buf, at, inode.nlink);
  F.u.write(buf, at, u);
  F.ino.write(buf, at, ino);
  F.uid.write(buf, at, inode.uid);
  F.gid.write(buf, at, inode.gid);
  const size = storedSize(inode, dataBlocks, tailSize);
  if (compact) {
    INODE_COMPACT.size.write(buf, at, size);
  } else {
    INODE_EXTENDED.size.write(buf, at, size);
    INODE_EXTENDED.mtime.write(buf, at, inode.mtimeSec);
    INODE_EXTENDED.mtimeNsec.write(buf, at, inode.mtimeNsec);
  }
}

/** The xattr area: header, references to shared xattrs, then the inline ones. */
function encodeXattrArea(buf: Buffer, at: number, inode: Inode, layout: Layout, digests: DigestPool<unknown>): void {
  const sharedCount = layout.sharedCount[inode.ino]!;
  XATTR_BODY_HEADER.nameFilter.write(buf, at, xattrNameFilter(inode));
  XATTR_BODY_HEADER.sharedCount.write(buf, at, sharedCount);
  let ref = at + EROFS_XATTR_HEADER_SIZE;
  let inline = ref + sharedCount * 4;
  const sharedBase = layout.inodesEnd % EROFS_BLOCK_SIZE;
  let sharedHere = 0;
  for (const x of inode.xattrs) {
    if (isSharedHere(x, sharedHere)) {
      sharedHere++;
      buf.writeUInt32LE((sharedBase + x.sharedOffset) / 4, ref);
      ref += 4;
    } else {
      encodeXattrEntry(buf, inline, x, digests, inode.kind === Kind.ExternalFile ? inode.digest : -1);
      inline += x.entrySize;
    }
  }
}

/** The inline tail: the last dirent block, a symlink target, the end of a file, or chunk pointers. */
function encodeTail(buf: Buffer, at: number, inode: Inode, tailSize: number, layout: Layout, blocks: DirentBlocks | null, codec: TextCodec): void {
  switch (inode.kind) {
    case Kind.Directory:
      encodeDirents(buf, at, inode, blocks!.starts[blocks!.starts.length - 1]!, inode.entries.length, layout, codec);
      break;
    case Kind.Symlink:
      codec.write(buf, at, inode.target, inode.size);
      break;
    case Kind.InlineFile:
      buf.set(inode.content!.subarray(inode.size - tailSize), at);
      break;
    case Kind.ExternalFile:
      buf.fill(0xff, at, at + tailSize); // chunk pointers, all EROFS_NULL_ADDR: holes
      break;
    default:
      break;
  }
}

/** Full blocks of an inode: directory blocks, or the first block of content. */
function writeDataBlocks(out: Output, inode: Inode, layout: Layout, codec: TextCodec): void {
  const dataBlocks = layout.dataBlocks[inode.ino]!;
  if (dataBlocks === 0) return;
  if (inode.kind === Kind.ExternalFile) {
    out.fill(EROFS_BLOCK_SIZE, 0xff); // a block of null chunk pointers
    return;
  }
  if (inode.kind === Kind.Directory) {
    // Blocks beyond the count stayed inline as the tail.
    const blocks = layout.direntsOf(inode, codec);
    for (let i = 0; i < dataBlocks; i++) {
      const at = out.position;
      const buf = out.take(EROFS_BLOCK_SIZE);
      const end = i + 1 < blocks.starts.length ? blocks.starts[i + 1]! : inode.entries.length;
      if (buf) encodeDirents(buf, at, inode, blocks.starts[i]!, end, layout, codec);
    }
    return;
  }
  // composefs stores at most one out-of-line block here (inline files are <= 5000 bytes, symlinks < 4096).
  const at = out.position;
  const buf = out.take(EROFS_BLOCK_SIZE);
  if (!buf) return;
  if (inode.kind === Kind.InlineFile) buf.set(inode.content!.subarray(0, Math.min(inode.size, EROFS_BLOCK_SIZE)), at);
  else if (inode.kind === Kind.Symlink) codec.write(buf, at, inode.target, inode.size);
}

// ---- the two passes --------------------------------------------------------------

/** nids count 32-byte slots from the start of the block the metadata begins in. */
const META_BLOCK = Math.floor((EROFS_SUPER_OFFSET + EROFS_SUPER_SIZE) / EROFS_BLOCK_SIZE);

function layoutImage(t: ImageTree, out: Output, layout: Layout, measuring: boolean): void {
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
  at = out.position;
  buf = out.take(EROFS_SUPER_SIZE);
  if (buf) {
    writeStruct(SUPERBLOCK, buf, at, {
      magic: EROFS_SUPER_MAGIC,
      checksum: 0,
      featureCompat: EROFS_FEATURE_COMPAT_MTIME | EROFS_FEATURE_COMPAT_XATTR_FILTER,
      blockSizeBits: EROFS_BLOCK_BITS,
      extSlots: 0,
      rootNid: layout.nid[0]!,
      inodeCount: t.inodes.length,
      buildTime: t.minMtimeSec,
      buildTimeNsec: t.minMtimeNsec,
      blocks: layout.totalBlocks,
      metaBlockAddr: META_BLOCK,
      xattrBlockAddr: Math.floor(layout.inodesEnd / EROFS_BLOCK_SIZE),
      featureIncompat: 0,
    });
  }
  const metaStart = META_BLOCK * EROFS_BLOCK_SIZE;
  let nextBlock = measuring ? 0 : layout.dataStart / EROFS_BLOCK_SIZE;
  for (const inode of t.inodes) {
    const ino = inode.ino;
    const blocks = inode.kind === Kind.Directory ? layout.direntsOf(inode, t.codec) : null;
    const shape = initialDataShape(inode, blocks);
    const compact = fitsCompactInode(inode, t, shape.dataBlocks, shape.tailSize);
    const nonTail = (compact ? EROFS_INODE_COMPACT_SIZE : EROFS_INODE_EXTENDED_SIZE) + layout.xattrSize[ino]!;
    align(out, EROFS_SLOT_SIZE);
    out.zeros(placeInode(inode, out.position, nonTail, shape) - out.position);
    const nid = (out.position - metaStart) / EROFS_SLOT_SIZE;
    if (measuring) {
      layout.nid[ino] = nid;
      layout.compact[ino] = compact ? 1 : 0;
      layout.dataBlocks[ino] = shape.dataBlocks;
      layout.tailSize[ino] = shape.tailSize;
    } else if (nid !== layout.nid[ino] || shape.tailSize !== layout.tailSize[ino]) {
      throw new Error(`composefs writer: layout changed between passes (inode ${ino})`);
    }
    const blockAddr = shape.dataBlocks > 0 ? nextBlock : 0;
    nextBlock += shape.dataBlocks;
    at = out.position;
    buf = out.take(nonTail + shape.tailSize);
    if (!buf) continue;
    encodeInode(buf, at, inode, layout, blockAddr);
    if (layout.xattrSize[ino]! > 0) encodeXattrArea(buf, at + nonTail - layout.xattrSize[ino]!, inode, layout, t.digests);
    if (shape.tailSize > 0) encodeTail(buf, at + nonTail, inode, shape.tailSize, layout, blocks, t.codec);
  }
  align(out, EROFS_SLOT_SIZE);
  layout.inodesEnd = out.position;
  for (const x of t.sharedXattrs) {
    at = out.position;
    buf = out.take(x.entrySize);
    if (buf) encodeXattrEntry(buf, at, x);
  }
  align(out, EROFS_BLOCK_SIZE);
  layout.dataStart = out.position;
  for (const inode of t.inodes) writeDataBlocks(out, inode, layout, t.codec);
  if (measuring) {
    layout.size = out.position;
    layout.totalBlocks = out.position / EROFS_BLOCK_SIZE;
  } else if (out.position !== layout.size) {
    throw new Error('composefs writer: the emitting pass disagrees with the measuring pass');
  }
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

/** The bytes of the image of a tree. */
export function writeTree(tree: ImageTree): Buffer {
  const layout = new Layout(tree);
  layoutImage(tree, new Measure(), layout, true);
  const image = Buffer.alloc(layout.size);
  layoutImage(tree, new Emit(image), layout, false);
  return image;
}

/** The image bytes of a manifest (checked here; throws InvalidManifestError). */
export function writeImage(manifest: Manifest, options: WriteOptions = {}): Buffer {
  checkManifest(manifest);
  return writeCheckedImage(manifest, options);
}

/**
 * What an image is built from: a checked manifest (with `consume`, given up to
 * the build, which lets each entry go once it is in the tree), or a source
 * whose entries passed every check (dump-tree.ts).
 */
export type ImageInput = { manifest: CheckedManifest; consume?: boolean } | { source: TreeSource };

/** The tree of an image input, at the options' format version. */
export function imageTree(input: ImageInput, options: WriteOptions = {}): ImageTree {
  const { min, max } = resolveVersion(options);
  return 'source' in input ? buildTreeOf(input.source, min, max) : buildTree(input.manifest, min, max, input.consume);
}

/** The image bytes of a tree source whose entries passed every check. */
export function writeSourceImage(source: TreeSource, options: WriteOptions = {}): Buffer {
  return writeTree(imageTree({ source }, options));
}

/** The image bytes of a manifest validateManifest or parseManifest returned: not checked again. */
export function writeCheckedImage(manifest: CheckedManifest, options: WriteOptions = {}): Buffer {
  return writeTree(imageTree({ manifest }, options));
}
