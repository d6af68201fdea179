// The on-disk format of a composefs image: an EROFS filesystem (4 KiB blocks,
// no compression) preceded by a 32-byte composefs header. Every constant and
// every structure layout lives here, once, little-endian; the writer and the
// reader encode and decode through these functions and repeat no offsets.

// ---- composefs header (bytes 0..31) ----------------------------------------

export const COMPOSEFS_MAGIC = 0xd078629a;
/** Version of the composefs header layout (not the image format version). */
export const COMPOSEFS_HEADER_VERSION = 1;
export const COMPOSEFS_HEADER_SIZE = 32;
/** Header flag: some inode carries a POSIX ACL xattr. */
export const COMPOSEFS_FLAG_HAS_ACL = 1 << 0;
/** Format versions this code writes: 1 marks directories holding whiteouts as opaque. */
export const COMPOSEFS_VERSION_MAX = 1;
export const COMPOSEFS_DEFAULT_MIN_VERSION = 0;
export const COMPOSEFS_DEFAULT_MAX_VERSION = 1;

export interface ComposefsHeader {
  magic: number;
  version: number;
  flags: number;
  composefsVersion: number;
}

export function writeComposefsHeader(buf: Buffer, off: number, h: ComposefsHeader): void {
  buf.writeUInt32LE(h.magic, off);
  buf.writeUInt32LE(h.version, off + 4);
  buf.writeUInt32LE(h.flags, off + 8);
  buf.writeUInt32LE(h.composefsVersion, off + 12);
  // 16 bytes unused, left zero
}

export function readComposefsHeader(buf: Buffer, off: number): ComposefsHeader {
  return {
    magic: buf.readUInt32LE(off),
    version: buf.readUInt32LE(off + 4),
    flags: buf.readUInt32LE(off + 8),
    composefsVersion: buf.readUInt32LE(off + 12),
  };
}

/**
 * Writes a 64-bit field. Readers get bigints; a writer may pass a safe
 * integer instead, which spares it BigInt arithmetic for every inode.
 */
function writeU64LE(buf: Buffer, off: number, v: bigint | number): void {
  if (typeof v === 'bigint') {
    buf.writeBigUInt64LE(v, off);
    return;
  }
  buf.writeUInt32LE(v % 2 ** 32, off);
  buf.writeUInt32LE(Math.floor(v / 2 ** 32), off + 4);
}

// ---- EROFS geometry ----------------------------------------------------------

export const EROFS_BLOCK_BITS = 12;
export const EROFS_BLOCK_SIZE = 1 << EROFS_BLOCK_BITS;
/** Inodes start on 32-byte slots; a nid is the slot index from the metadata start. */
export const EROFS_SLOT_BITS = 5;
export const EROFS_SLOT_SIZE = 1 << EROFS_SLOT_BITS;
export const EROFS_SUPER_OFFSET = 1024;
export const EROFS_SUPER_MAGIC = 0xe0f5e1e2;
export const EROFS_SUPER_SIZE = 128;
export const EROFS_FEATURE_COMPAT_MTIME = 0x2;
export const EROFS_FEATURE_COMPAT_XATTR_FILTER = 0x4;
export const EROFS_NAME_MAX = 255;
/** Block address meaning "a hole": every chunk of an external file reads as zeros. */
export const EROFS_NULL_ADDR = 0xffffffff;

// ---- superblock (at byte 1024) -----------------------------------------------

export interface SuperBlock {
  magic: number;
  checksum: number;
  featureCompat: number;
  blockSizeBits: number;
  extSlots: number;
  rootNid: number;
  inodeCount: bigint;
  buildTime: bigint;
  buildTimeNsec: number;
  blocks: number;
  metaBlockAddr: number;
  xattrBlockAddr: number;
  featureIncompat: number;
}

export function writeSuperBlock(buf: Buffer, off: number, s: SuperBlock): void {
  buf.writeUInt32LE(s.magic, off);
  buf.writeUInt32LE(s.checksum, off + 4);
  buf.writeUInt32LE(s.featureCompat, off + 8);
  buf.writeUInt8(s.blockSizeBits, off + 12);
  buf.writeUInt8(s.extSlots, off + 13);
  buf.writeUInt16LE(s.rootNid, off + 14);
  buf.writeBigUInt64LE(s.inodeCount, off + 16);
  buf.writeBigUInt64LE(s.buildTime, off + 24);
  buf.writeUInt32LE(s.buildTimeNsec, off + 32);
  buf.writeUInt32LE(s.blocks, off + 36);
  buf.writeUInt32LE(s.metaBlockAddr, off + 40);
  buf.writeUInt32LE(s.xattrBlockAddr, off + 44);
  // uuid[16] at 48 and volume_name[16] at 64 stay zero
  buf.writeUInt32LE(s.featureIncompat, off + 80);
  // the rest (compression, devices, long prefixes, packed inode) stays zero
}

export function readSuperBlock(buf: Buffer, off: number): SuperBlock {
  return {
    magic: buf.readUInt32LE(off),
    checksum: buf.readUInt32LE(off + 4),
    featureCompat: buf.readUInt32LE(off + 8),
    blockSizeBits: buf.readUInt8(off + 12),
    extSlots: buf.readUInt8(off + 13),
    rootNid: buf.readUInt16LE(off + 14),
    inodeCount: buf.readBigUInt64LE(off + 16),
    buildTime: buf.readBigUInt64LE(off + 24),
    buildTimeNsec: buf.readUInt32LE(off + 32),
    blocks: buf.readUInt32LE(off + 36),
    metaBlockAddr: buf.readUInt32LE(off + 40),
    xattrBlockAddr: buf.readUInt32LE(off + 44),
    featureIncompat: buf.readUInt32LE(off + 80),
  };
}

// ---- inodes --------------------------------------------------------------------

export const EROFS_INODE_COMPACT_SIZE = 32;
export const EROFS_INODE_EXTENDED_SIZE = 64;

/** i_format bit 0: 0 = compact (32 bytes), 1 = extended (64 bytes). */
export const EROFS_INODE_LAYOUT_COMPACT = 0;
export const EROFS_INODE_LAYOUT_EXTENDED = 1;
/** i_format bits 1..3: how the data is stored. */
export const EROFS_INODE_FLAT_PLAIN = 0;
export const EROFS_INODE_FLAT_INLINE = 2;
export const EROFS_INODE_CHUNK_BASED = 4;
const I_VERSION_BIT = 0;
const I_DATALAYOUT_BIT = 1;

export function inodeFormat(layout: number, dataLayout: number): number {
  return (dataLayout << I_DATALAYOUT_BIT) | (layout << I_VERSION_BIT);
}
export function inodeFormatLayout(format: number): number {
  return (format >> I_VERSION_BIT) & 0x1;
}
export function inodeFormatDataLayout(format: number): number {
  return (format >> I_DATALAYOUT_BIT) & 0x7;
}

/** Chunk-based files: log2(chunk size) - block bits, in the low bits of the chunk format. */
export const EROFS_CHUNK_FORMAT_BLKBITS_MASK = 0x1f;

/**
 * The fields both inode layouts carry. `u` is the 32-bit union (block address,
 * device number or chunk format); `chunkFormat`, when set, overwrites its low
 * 16 bits, as the chunk-info view of that union does.
 */
/** U64 is the type of the 64-bit fields: bigint when read, bigint or a safe integer when written. */
export interface Inode<U64 = bigint> {
  format: number;
  xattrIcount: number;
  mode: number;
  nlink: number;
  size: U64;
  u: number;
  chunkFormat?: number;
  ino: number;
  uid: number;
  gid: number;
  /** Extended inodes only; compact ones take the superblock build time. */
  mtime: U64;
  mtimeNsec: number;
}

export function writeInode(buf: Buffer, off: number, i: Inode<bigint | number>): void {
  buf.writeUInt16LE(i.format, off);
  buf.writeUInt16LE(i.xattrIcount, off + 2);
  buf.writeUInt16LE(i.mode & 0xffff, off + 4);
  if (inodeFormatLayout(i.format) === EROFS_INODE_LAYOUT_COMPACT) {
    buf.writeUInt16LE(i.nlink, off + 6);
    buf.writeUInt32LE(Number(i.size), off + 8);
    writeInodeUnion(buf, off + 16, i);
    buf.writeUInt32LE(i.ino, off + 20);
    buf.writeUInt16LE(i.uid, off + 24);
    buf.writeUInt16LE(i.gid, off + 26);
  } else {
    writeU64LE(buf, off + 8, i.size);
    writeInodeUnion(buf, off + 16, i);
    buf.writeUInt32LE(i.ino, off + 20);
    buf.writeUInt32LE(i.uid, off + 24);
    buf.writeUInt32LE(i.gid, off + 28);
    writeU64LE(buf, off + 32, i.mtime);
    buf.writeUInt32LE(i.mtimeNsec, off + 40);
    buf.writeUInt32LE(i.nlink, off + 44);
  }
}

function writeInodeUnion(buf: Buffer, off: number, i: Inode<bigint | number>): void {
  buf.writeUInt32LE(i.u >>> 0, off);
  if (i.chunkFormat !== undefined) buf.writeUInt16LE(i.chunkFormat, off);
}

/** Decodes either layout; compact inodes get mtime 0 (the caller applies the build time). */
export function readInode(buf: Buffer, off: number): Inode & { inodeSize: number } {
  const format = buf.readUInt16LE(off);
  const common = { format, xattrIcount: buf.readUInt16LE(off + 2), mode: buf.readUInt16LE(off + 4) };
  if (inodeFormatLayout(format) === EROFS_INODE_LAYOUT_COMPACT) {
    return {
      ...common,
      nlink: buf.readUInt16LE(off + 6),
      size: BigInt(buf.readUInt32LE(off + 8)),
      u: buf.readUInt32LE(off + 16),
      ino: buf.readUInt32LE(off + 20),
      uid: buf.readUInt16LE(off + 24),
      gid: buf.readUInt16LE(off + 26),
      mtime: 0n,
      mtimeNsec: 0,
      inodeSize: EROFS_INODE_COMPACT_SIZE,
    };
  }
  return {
    ...common,
    size: buf.readBigUInt64LE(off + 8),
    u: buf.readUInt32LE(off + 16),
    ino: buf.readUInt32LE(off + 20),
    uid: buf.readUInt32LE(off + 24),
    gid: buf.readUInt32LE(off + 28),
    mtime: buf.readBigUInt64LE(off + 32),
    mtimeNsec: buf.readUInt32LE(off + 40),
    nlink: buf.readUInt32LE(off + 44),
    inodeSize: EROFS_INODE_EXTENDED_SIZE,
  };
}

// ---- xattrs --------------------------------------------------------------------

export const EROFS_XATTR_HEADER_SIZE = 12;
export const EROFS_XATTR_ENTRY_SIZE = 4;
/** An inode references at most this many shared xattrs (the rest are stored inline). */
export const EROFS_XATTR_MAX_SHARED = 0x80;
export const EROFS_XATTR_FILTER_BITS = 32;
export const EROFS_XATTR_FILTER_DEFAULT = 0xffffffff;
export const EROFS_XATTR_FILTER_SEED = 0x25bbe08f;

export const EROFS_XATTR_INDEX_USER = 1;
export const EROFS_XATTR_INDEX_POSIX_ACL_ACCESS = 2;
export const EROFS_XATTR_INDEX_POSIX_ACL_DEFAULT = 3;
export const EROFS_XATTR_INDEX_TRUSTED = 4;
export const EROFS_XATTR_INDEX_SECURITY = 6;

/** Prefixes the writer abbreviates to an index, in the order it tries them. */
export const EROFS_XATTR_WRITE_PREFIXES: ReadonlyArray<readonly [string, number]> = [
  ['user.', EROFS_XATTR_INDEX_USER],
  ['system.posix_acl_access', EROFS_XATTR_INDEX_POSIX_ACL_ACCESS],
  ['system.posix_acl_default', EROFS_XATTR_INDEX_POSIX_ACL_DEFAULT],
  ['trusted.', EROFS_XATTR_INDEX_TRUSTED],
  ['security.', EROFS_XATTR_INDEX_SECURITY],
];

/** What each index expands to when reading (5 is lustre, never written here). */
export const EROFS_XATTR_READ_PREFIXES: readonly string[] = [
  '',
  'user.',
  'system.posix_acl_access',
  'system.posix_acl_default',
  'trusted.',
  'lustre.',
  'security.',
];

export interface XattrBodyHeader {
  nameFilter: number;
  sharedCount: number;
}

export function writeXattrBodyHeader(buf: Buffer, off: number, h: XattrBodyHeader): void {
  buf.writeUInt32LE(h.nameFilter >>> 0, off);
  buf.writeUInt8(h.sharedCount, off + 4);
}

export function readXattrBodyHeader(buf: Buffer, off: number): XattrBodyHeader {
  return { nameFilter: buf.readUInt32LE(off), sharedCount: buf.readUInt8(off + 4) };
}

export interface XattrEntryHeader {
  nameLength: number;
  nameIndex: number;
  valueSize: number;
}

export function writeXattrEntryHeader(buf: Buffer, off: number, e: XattrEntryHeader): void {
  buf.writeUInt8(e.nameLength, off);
  buf.writeUInt8(e.nameIndex, off + 1);
  buf.writeUInt16LE(e.valueSize, off + 2);
}

export function readXattrEntryHeader(buf: Buffer, off: number): XattrEntryHeader {
  return { nameLength: buf.readUInt8(off), nameIndex: buf.readUInt8(off + 1), valueSize: buf.readUInt16LE(off + 2) };
}

/** Bytes the inline xattr area takes for an icount (0 means no area). */
export function xattrAreaSize(icount: number): number {
  return icount === 0 ? 0 : EROFS_XATTR_HEADER_SIZE + (icount - 1) * 4;
}

// ---- directories -------------------------------------------------------------

export const EROFS_DIRENT_SIZE = 12;

export const EROFS_FT_UNKNOWN = 0;
export const EROFS_FT_REG_FILE = 1;
export const EROFS_FT_DIR = 2;
export const EROFS_FT_CHRDEV = 3;
export const EROFS_FT_BLKDEV = 4;
export const EROFS_FT_FIFO = 5;
export const EROFS_FT_SOCK = 6;
export const EROFS_FT_SYMLINK = 7;

export interface Dirent<U64 = bigint> {
  nid: U64;
  nameOffset: number;
  fileType: number;
}

export function writeDirent(buf: Buffer, off: number, d: Dirent<bigint | number>): void {
  writeU64LE(buf, off, d.nid);
  buf.writeUInt16LE(d.nameOffset, off + 8);
  buf.writeUInt8(d.fileType, off + 10);
}

export function readDirent(buf: Buffer, off: number): Dirent {
  return { nid: buf.readBigUInt64LE(off), nameOffset: buf.readUInt16LE(off + 8), fileType: buf.readUInt8(off + 10) };
}

// ---- POSIX file types (st_mode & S_IFMT) ---------------------------------------

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

export function erofsFileType(mode: number): number {
  switch (mode & S_IFMT) {
    case S_IFREG: return EROFS_FT_REG_FILE;
    case S_IFDIR: return EROFS_FT_DIR;
    case S_IFLNK: return EROFS_FT_SYMLINK;
    case S_IFCHR: return EROFS_FT_CHRDEV;
    case S_IFBLK: return EROFS_FT_BLKDEV;
    case S_IFIFO: return EROFS_FT_FIFO;
    case S_IFSOCK: return EROFS_FT_SOCK;
    default: return EROFS_FT_UNKNOWN;
  }
}

// ---- composefs conventions on top of EROFS -------------------------------------

/** Largest inline ("content") file mkcomposefs accepts. */
export const COMPOSEFS_INLINE_MAX = 5000;
/** External files are described by at most this many chunk pointers. */
export const COMPOSEFS_MAX_CHUNKS = 1024;
/** Xattr bytes one inode may take when it comes from outside input (UINT16_MAX / 2). */
export const COMPOSEFS_XATTR_BUDGET = 32767;
export const COMPOSEFS_DIGEST_SIZE = 32;
/** fs-verity hash algorithm number of sha256, stored in the metacopy xattr. */
export const FSVERITY_HASH_ALG_SHA256 = 1;

export const OVERLAY_PREFIX = 'trusted.overlay.';
export const OVERLAY_ESCAPE_PREFIX = 'trusted.overlay.overlay.';
export const OVERLAY_METACOPY = 'trusted.overlay.metacopy';
export const OVERLAY_REDIRECT = 'trusted.overlay.redirect';
export const OVERLAY_OPAQUE = 'trusted.overlay.opaque';
export const OVERLAY_ESCAPED_WHITEOUT = 'trusted.overlay.overlay.whiteout';
export const OVERLAY_ESCAPED_WHITEOUTS = 'trusted.overlay.overlay.whiteouts';
export const OVERLAY_ESCAPED_OPAQUE = 'trusted.overlay.overlay.opaque';
export const OVERLAY_USER_WHITEOUT = 'user.overlay.whiteout';
export const OVERLAY_USER_WHITEOUTS = 'user.overlay.whiteouts';
export const OVERLAY_USER_OPAQUE = 'user.overlay.opaque';
