// The on-disk format of a composefs image: an EROFS filesystem (4 KiB blocks,
// no compression) preceded by a 32-byte composefs header. Every constant and
// every structure lives here, once, little-endian: a structure is a table of
// its fields (offset and width), and the writer and the reader both go
// through those tables, so no byte offset is written anywhere else.

import type { Entry } from '../schema/types.generated.js';

type EntryType = Entry['type'];

// ---- fields ------------------------------------------------------------------

/** One little-endian field of an on-disk structure. W is what a writer may pass. */
export interface Field<R, W = R> {
  readonly offset: number;
  read(buf: Buffer, at: number): R;
  write(buf: Buffer, at: number, value: W): void;
}

function u8(offset: number): Field<number> {
  return { offset, read: (b, at) => b[at + offset]!, write: (b, at, v) => void (b[at + offset] = v) };
}
function u16(offset: number): Field<number> {
  return { offset, read: (b, at) => b.readUInt16LE(at + offset), write: (b, at, v) => void b.writeUInt16LE(v & 0xffff, at + offset) };
}
function u32(offset: number): Field<number> {
  return { offset, read: (b, at) => b.readUInt32LE(at + offset), write: (b, at, v) => void b.writeUInt32LE(v >>> 0, at + offset) };
}
/** Read as a bigint; a writer may pass a safe integer instead, sparing BigInt arithmetic per inode. */
function u64(offset: number): Field<bigint, bigint | number> {
  return {
    offset,
    read: (b, at) => b.readBigUInt64LE(at + offset),
    write(b, at, v) {
      if (typeof v === 'bigint') b.writeBigUInt64LE(v, at + offset);
      else {
        b.writeUInt32LE(v % 2 ** 32, at + offset);
        b.writeUInt32LE(Math.floor(v / 2 ** 32), at + offset + 4);
      }
    },
  };
}

type Struct = Readonly<Record<string, Field<unknown, never>>>;
/** The values of a structure as read. */
export type Values<S> = { -readonly [K in keyof S]: S[K] extends Field<infer R, never> ? R : never };
/** The values of a structure as a writer gives them. */
export type WriteValues<S> = { [K in keyof S]: S[K] extends Field<unknown, infer W> ? W : never };

export function readStruct<S extends Struct>(s: S, buf: Buffer, at: number): Values<S> {
  const out: Record<string, unknown> = {};
  for (const k in s) out[k] = s[k]!.read(buf, at);
  return out as Values<S>;
}

/** Writes every field of `s`; bytes no field covers stay as they are (zero in a fresh image). */
export function writeStruct<S extends Struct>(s: S, buf: Buffer, at: number, v: WriteValues<S>): void {
  for (const k in s) (s[k] as unknown as Field<unknown, unknown>).write(buf, at, v[k]);
}

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

export const COMPOSEFS_HEADER = {
  magic: u32(0),
  version: u32(4),
  flags: u32(8),
  composefsVersion: u32(12),
  // 16 bytes unused, zero
} as const;
export type ComposefsHeader = Values<typeof COMPOSEFS_HEADER>;

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

export const SUPERBLOCK = {
  magic: u32(0),
  checksum: u32(4),
  featureCompat: u32(8),
  blockSizeBits: u8(12),
  extSlots: u8(13),
  rootNid: u16(14),
  inodeCount: u64(16),
  buildTime: u64(24),
  buildTimeNsec: u32(32),
  blocks: u32(36),
  metaBlockAddr: u32(40),
  xattrBlockAddr: u32(44),
  // uuid[16] at 48 and volume_name[16] at 64 stay zero
  featureIncompat: u32(80),
  // the rest (compression, devices, long prefixes, packed inode) stays zero
} as const;
export type SuperBlock = Values<typeof SUPERBLOCK>;

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
 * The two inode layouts. `u` is the 32-bit union: the first block of a flat
 * inode, the device number, or, in its low 16 bits, the chunk format of a
 * chunk-based file. A compact inode has no mtime: it takes the build time.
 */
export const INODE_COMPACT = {
  format: u16(0),
  xattrIcount: u16(2),
  mode: u16(4),
  nlink: u16(6),
  size: u32(8),
  u: u32(16),
  ino: u32(20),
  uid: u16(24),
  gid: u16(26),
} as const;

export const INODE_EXTENDED = {
  format: u16(0),
  xattrIcount: u16(2),
  mode: u16(4),
  size: u64(8),
  u: u32(16),
  ino: u32(20),
  uid: u32(24),
  gid: u32(28),
  mtime: u64(32),
  mtimeNsec: u32(40),
  nlink: u32(44),
} as const;

/** An inode of either layout as read, and the bytes it takes. */
export type Inode = Values<typeof INODE_EXTENDED> & { inodeSize: number };

/** Decodes either layout; compact inodes get mtime 0 (the caller applies the build time). */
export function readInode(buf: Buffer, off: number): Inode {
  if (inodeFormatLayout(INODE_COMPACT.format.read(buf, off)) === EROFS_INODE_LAYOUT_COMPACT) {
    const c = readStruct(INODE_COMPACT, buf, off);
    return { ...c, size: BigInt(c.size), mtime: 0n, mtimeNsec: 0, inodeSize: EROFS_INODE_COMPACT_SIZE };
  }
  return { ...readStruct(INODE_EXTENDED, buf, off), inodeSize: EROFS_INODE_EXTENDED_SIZE };
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

/** The head of an inode's xattr area (EROFS_XATTR_HEADER_SIZE bytes). */
export const XATTR_BODY_HEADER = {
  nameFilter: u32(0),
  sharedCount: u8(4),
} as const;

/** One xattr entry's head; the name suffix and the value follow (EROFS_XATTR_ENTRY_SIZE bytes). */
export const XATTR_ENTRY = {
  nameLength: u8(0),
  nameIndex: u8(1),
  valueSize: u16(2),
} as const;

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

export const DIRENT = {
  nid: u64(0),
  nameOffset: u16(8),
  fileType: u8(10),
} as const;

// ---- POSIX file types (st_mode & S_IFMT) ---------------------------------------

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

/** The file type bits of each kind of manifest entry (a whiteout is a 0:0 character device). */
export const ENTRY_TYPE_BITS: Readonly<Record<Exclude<EntryType, 'hardlink'>, number>> = {
  dir: S_IFDIR, file: S_IFREG, symlink: S_IFLNK, chardev: S_IFCHR, blockdev: S_IFBLK,
  fifo: S_IFIFO, socket: S_IFSOCK, whiteout: S_IFCHR,
};

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
/** PATH_MAX, with its NUL: paths, symlink targets and backing paths are shorter. */
export const PATH_MAX = 4096;
/** External files are described by at most this many chunk pointers. */
export const COMPOSEFS_MAX_CHUNKS = 1024;
/** fs-verity hash algorithm number of sha256, stored in the metacopy xattr. */
export const FSVERITY_HASH_ALG_SHA256 = 1;

/** Where the object of a digest lives in a composefs object store ("xx/rest"): the backing path. */
export function objectPath(digest: string): string {
  return `${digest.slice(0, 2)}/${digest.slice(2)}`;
}

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
