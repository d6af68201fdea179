// Reading a composefs image back: bytes -> tree -> dump entries (and so a
// manifest), as `composefs-info dump` does: the overlay xattrs the writer
// added are turned back into what they describe (digest, backing path,
// whiteouts), escaped user xattrs are unescaped, the 256 store whiteouts are
// hidden, and an inode reached twice becomes a hardlink. Also a summary of the
// header and superblock for `mountgate image inspect`. Every offset is checked
// against the image size: a broken image gives InvalidManifestError, not a crash.
import type { Manifest } from '../schema/types.generated.js';
import { InvalidManifestError } from '../manifest/errors.js';
import { dumpToManifest } from './convert.js';
import type { DumpEntry, DumpXattr } from './dump.js';
import {
  COMPOSEFS_FLAG_HAS_ACL, COMPOSEFS_HEADER, COMPOSEFS_HEADER_VERSION, COMPOSEFS_INLINE_MAX, COMPOSEFS_MAGIC, DIRENT,
  ENTRY_TYPE_BITS, EROFS_BLOCK_SIZE, EROFS_DIRENT_SIZE, EROFS_INODE_CHUNK_BASED, EROFS_INODE_COMPACT_SIZE,
  EROFS_INODE_FLAT_INLINE, EROFS_INODE_FLAT_PLAIN, EROFS_SLOT_BITS, EROFS_SUPER_MAGIC, EROFS_SUPER_OFFSET,
  EROFS_XATTR_ENTRY_SIZE, EROFS_XATTR_HEADER_SIZE, EROFS_XATTR_READ_PREFIXES, OVERLAY_ESCAPE_PREFIX,
  OVERLAY_ESCAPED_WHITEOUT, OVERLAY_ESCAPED_WHITEOUTS, OVERLAY_METACOPY, OVERLAY_PREFIX, OVERLAY_REDIRECT,
  OVERLAY_USER_WHITEOUT, OVERLAY_USER_WHITEOUTS, PATH_MAX, S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG,
  SUPERBLOCK, XATTR_BODY_HEADER, XATTR_ENTRY, inodeFormatDataLayout, readInode, readStruct, xattrAreaSize,
  type ComposefsHeader, type SuperBlock,
} from './format.js';

export interface ImageNode {
  name: Buffer;
  parent: ImageNode | null;
  /** Set when this name is a second link to an inode seen earlier. */
  hardlinkTo: ImageNode | null;
  nid: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  size: bigint;
  mtimeSec: bigint;
  mtimeNsec: number;
  payload: Buffer | null;
  content: Buffer | null;
  digest: Buffer | null;
  xattrs: DumpXattr[];
  children: ImageNode[];
}

function fail(message: string): never {
  throw new InvalidManifestError(message, '(image)');
}

class ImageReader {
  readonly header: ComposefsHeader;
  readonly superBlock: SuperBlock;
  private readonly metaBase: number;
  private readonly xattrBase: number;
  private readonly seen = new Map<number, ImageNode>();
  private depth = 0;

  constructor(private readonly image: Buffer) {
    if (image.length < EROFS_BLOCK_SIZE) fail(`the image is ${image.length} bytes, smaller than one block`);
    this.header = readStruct(COMPOSEFS_HEADER, image, 0);
    if (this.header.magic !== COMPOSEFS_MAGIC) fail('not a composefs image: wrong composefs magic');
    if (this.header.version !== COMPOSEFS_HEADER_VERSION) fail(`unsupported composefs header version ${this.header.version}`);
    this.superBlock = readStruct(SUPERBLOCK, image, EROFS_SUPER_OFFSET);
    if (this.superBlock.magic !== EROFS_SUPER_MAGIC) fail('not an EROFS image: wrong superblock magic');
    if (this.superBlock.blockSizeBits !== 12) fail(`unsupported block size 2^${this.superBlock.blockSizeBits}`);
    this.metaBase = this.superBlock.metaBlockAddr * EROFS_BLOCK_SIZE;
    this.xattrBase = this.superBlock.xattrBlockAddr * EROFS_BLOCK_SIZE;
    if (this.metaBase >= image.length || this.xattrBase >= image.length) fail('metadata or xattr area lies beyond the end of the image');
  }

  private bytes(offset: number, length: number): Buffer {
    if (offset < 0 || length < 0 || offset + length > this.image.length) fail(`a read of ${length} bytes at ${offset} goes beyond the image`);
    return this.image.subarray(offset, offset + length);
  }

  readRoot(): ImageNode {
    const root = this.readNode(this.superBlock.rootNid, Buffer.alloc(0), null);
    // The kernel refuses to mount such an image too ("rootino is not a directory").
    if (root === null || (root.mode & S_IFMT) !== S_IFDIR) fail(`the root inode (nid ${this.superBlock.rootNid}) is not a directory`);
    return root;
  }

  /** Returns null for a real whiteout (the store's 00..ff), which is hidden. */
  private readNode(nid: number, name: Buffer, parent: ImageNode | null): ImageNode | null {
    const inodeOffset = this.metaBase + nid * 2 ** EROFS_SLOT_BITS;
    this.bytes(inodeOffset, EROFS_INODE_COMPACT_SIZE);
    const existing = this.seen.get(nid);
    if (existing) return { ...existing, name, parent, hardlinkTo: existing, children: [] };
    const inode = readInode(this.image, inodeOffset);
    this.bytes(inodeOffset, inode.inodeSize);
    const type = inode.mode & S_IFMT;
    const node: ImageNode = {
      name, parent, hardlinkTo: null, nid,
      mode: inode.mode, nlink: inode.nlink, uid: inode.uid, gid: inode.gid,
      rdev: type === S_IFCHR || type === S_IFBLK ? inode.u : 0,
      size: inode.size,
      mtimeSec: inode.inodeSize === EROFS_INODE_COMPACT_SIZE ? this.superBlock.buildTime : inode.mtime,
      mtimeNsec: inode.inodeSize === EROFS_INODE_COMPACT_SIZE ? this.superBlock.buildTimeNsec : inode.mtimeNsec,
      payload: null, content: null, digest: null, xattrs: [], children: [],
    };
    if (type === S_IFCHR && node.rdev === 0) return null;
    this.seen.set(nid, node);
    const xattrSize = xattrAreaSize(inode.xattrIcount);
    const tailOffset = inodeOffset + inode.inodeSize + xattrSize;
    const dataLayout = inodeFormatDataLayout(inode.format);
    const tailPacked = dataLayout === EROFS_INODE_FLAT_INLINE;
    const fileSize = Number(inode.size);
    const blockCount = Math.ceil(fileSize / EROFS_BLOCK_SIZE);
    const outOfLineBlocks = tailPacked ? blockCount - 1 : blockCount;
    const blockBase = inode.u * EROFS_BLOCK_SIZE;
    const tailSize = tailPacked ? fileSize % EROFS_BLOCK_SIZE : 0;

    if (type === S_IFDIR) {
      if (++this.depth > 4096) fail('directories nest too deep');
      for (let b = 0; b < outOfLineBlocks; b++) {
        const last = !tailPacked && b + 1 === outOfLineBlocks;
        const size = last && fileSize % EROFS_BLOCK_SIZE !== 0 ? fileSize % EROFS_BLOCK_SIZE : EROFS_BLOCK_SIZE;
        this.readDirBlock(node, this.bytes(blockBase + b * EROFS_BLOCK_SIZE, size));
      }
      if (tailPacked) this.readDirBlock(node, this.bytes(tailOffset, tailSize));
      this.depth--;
    } else if (type === S_IFLNK) {
      if (fileSize >= PATH_MAX) fail(`symlink target of ${fileSize} bytes is too long`);
      node.payload = Buffer.from(this.bytes(tailPacked ? tailOffset : blockBase, fileSize));
    } else if (type === S_IFREG && fileSize !== 0 && (dataLayout === EROFS_INODE_FLAT_PLAIN || tailPacked)) {
      if (fileSize > COMPOSEFS_INLINE_MAX) fail(`inline file of ${fileSize} bytes is larger than composefs allows`);
      const outOfLine = tailPacked ? outOfLineBlocks * EROFS_BLOCK_SIZE : fileSize;
      node.content = Buffer.concat([this.bytes(blockBase, outOfLine), this.bytes(tailOffset, tailSize)]);
    } else if (type === S_IFREG && fileSize !== 0 && dataLayout !== EROFS_INODE_CHUNK_BASED) {
      fail(`regular file with unsupported data layout ${dataLayout}`);
    }
    if (inode.xattrIcount > 0) this.readXattrs(node, inodeOffset + inode.inodeSize, xattrSize);
    return node;
  }

  private readDirBlock(dir: ImageNode, block: Buffer): void {
    if (block.length < EROFS_DIRENT_SIZE) fail('a directory block is too small');
    const first = readStruct(DIRENT, block, 0);
    if (first.nameOffset % EROFS_DIRENT_SIZE !== 0 || first.nameOffset > block.length) fail('a directory block is corrupt');
    const count = first.nameOffset / EROFS_DIRENT_SIZE;
    for (let i = 0; i < count; i++) {
      const d = readStruct(DIRENT, block, i * EROFS_DIRENT_SIZE);
      let end: number;
      if (i + 1 < count) end = readStruct(DIRENT, block, (i + 1) * EROFS_DIRENT_SIZE).nameOffset;
      else {
        const nul = block.indexOf(0, d.nameOffset);
        end = nul < 0 ? block.length : nul;
      }
      if (end < d.nameOffset || end > block.length) fail('a directory entry name is out of bounds');
      const name = Buffer.from(block.subarray(d.nameOffset, end));
      if (name.equals(DOT) || name.equals(DOTDOT)) continue;
      const child = this.readNode(Number(d.nid), name, dir);
      if (child) dir.children.push(child);
    }
  }

  private readXattrs(node: ImageNode, offset: number, size: number): void {
    const area = this.bytes(offset, size);
    const header = readStruct(XATTR_BODY_HEADER, area, 0);
    let pos = EROFS_XATTR_HEADER_SIZE + header.sharedCount * 4;
    // "<=": an entry with an empty suffix and value is exactly 4 bytes
    // (composefs-info's "<" drops such an entry when it comes last).
    while (pos + EROFS_XATTR_ENTRY_SIZE <= size) {
      const e = readStruct(XATTR_ENTRY, area, pos);
      const start = offset + pos + EROFS_XATTR_ENTRY_SIZE;
      this.applyXattr(node, e.nameIndex, this.bytes(start, e.nameLength), start + e.nameLength, e.valueSize);
      pos += Math.ceil((EROFS_XATTR_ENTRY_SIZE + e.nameLength + e.valueSize) / 4) * 4;
    }
    for (let i = 0; i < header.sharedCount; i++) {
      if (EROFS_XATTR_HEADER_SIZE + i * 4 + 4 > size) fail('shared xattr ids run past the xattr area');
      const id = area.readUInt32LE(EROFS_XATTR_HEADER_SIZE + i * 4);
      const at = this.xattrBase + id * 4;
      const e = readStruct(XATTR_ENTRY, this.bytes(at, EROFS_XATTR_ENTRY_SIZE), 0);
      const start = at + EROFS_XATTR_ENTRY_SIZE;
      this.applyXattr(node, e.nameIndex, this.bytes(start, e.nameLength), start + e.nameLength, e.valueSize);
    }
  }

  /** Undoes what the writer's overlay view added; keeps the rest as user xattrs. */
  private applyXattr(node: ImageNode, index: number, suffix: Buffer, valueOffset: number, valueSize: number): void {
    const prefix = EROFS_XATTR_READ_PREFIXES[index];
    if (prefix === undefined) fail(`unknown xattr name index ${index}`);
    const name = prefix + suffix.toString('latin1');
    const value = Buffer.from(this.bytes(valueOffset, valueSize));
    const isRegular = (node.mode & S_IFMT) === S_IFREG;
    if (name === OVERLAY_REDIRECT) {
      if (isRegular) node.payload = value.length > 1 && value[0] === 0x2f ? value.subarray(1) : value;
      return;
    }
    if (name === OVERLAY_METACOPY) {
      if (isRegular && value.length === 36) node.digest = value.subarray(4);
      return;
    }
    if (name === OVERLAY_ESCAPED_WHITEOUT && isRegular) {
      node.mode = (node.mode & ~S_IFMT) | S_IFCHR;
      node.rdev = 0;
      node.size = 0n;
      return;
    }
    if (name === OVERLAY_ESCAPED_WHITEOUTS || name === OVERLAY_USER_WHITEOUT || name === OVERLAY_USER_WHITEOUTS) return;
    let key = name;
    if (name.startsWith(OVERLAY_PREFIX)) {
      if (!name.startsWith(OVERLAY_ESCAPE_PREFIX)) return; // the writer's own overlay xattrs
      key = OVERLAY_PREFIX + name.slice(OVERLAY_ESCAPE_PREFIX.length);
    }
    const keyBytes = Buffer.from(key, 'latin1');
    const existing = node.xattrs.findIndex((x) => x.key.equals(keyBytes));
    if (existing >= 0) node.xattrs.splice(existing, 1);
    node.xattrs.push({ key: keyBytes, value });
  }
}

const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');
const SLASH = Buffer.from('/');

/** The tree of an image, root first. */
export function readImage(image: Buffer): ImageNode {
  return new ImageReader(image).readRoot();
}

function nodePath(node: ImageNode): Buffer {
  const names: Buffer[] = [];
  for (let n: ImageNode | null = node; n && n.parent; n = n.parent) names.unshift(n.name);
  return names.length === 0 ? SLASH : Buffer.concat(names.flatMap((n) => [SLASH, n]));
}

/** The dump entries of an image, in tree order, as `composefs-info dump` lists them. */
export function imageToDumpEntries(image: Buffer): DumpEntry[] {
  const out: DumpEntry[] = [];
  const visit = (node: ImageNode, path: Buffer): void => {
    const target = node.hardlinkTo ?? node;
    out.push({
      path,
      size: target.size,
      mode: target.mode,
      hardlink: node.hardlinkTo !== null,
      nlink: target.nlink,
      uid: target.uid,
      gid: target.gid,
      rdev: target.rdev,
      mtimeSec: target.mtimeSec,
      mtimeNsec: target.mtimeNsec,
      payload: node.hardlinkTo ? nodePath(node.hardlinkTo) : target.payload,
      content: target.content,
      digest: target.digest ? target.digest.toString('hex') : null,
      xattrs: target.xattrs,
    });
    const dirPrefix = path.length === 1 ? path : Buffer.concat([path, SLASH]);
    for (const c of node.children) visit(c, Buffer.concat([dirPrefix, c.name]));
  };
  visit(readImage(image), Buffer.from('/'));
  return out;
}

/** The manifest of an image. */
export function imageToManifest(image: Buffer): Manifest {
  return dumpToManifest(imageToDumpEntries(image));
}

export interface ImageSummary {
  size: number;
  composefsVersion: number;
  hasAcl: boolean;
  blockSize: number;
  blocks: number;
  inodes: number;
  rootNid: number;
  buildTime: { sec: number; nsec: number };
  xattrBlockAddr: number;
  featureCompat: number;
  entries: number;
  byType: Record<string, number>;
  hardlinks: number;
  inlineFiles: number;
  externalFiles: number;
  whiteouts: number;
}

/** Entry type names by file type bits (a 0:0 character device, a whiteout, is told apart by its rdev). */
const typeNames: Record<number, string> = Object.fromEntries(
  Object.entries(ENTRY_TYPE_BITS).filter(([name]) => name !== 'whiteout').map(([name, bits]) => [bits, name]),
);

/** Header, superblock and a count of what the tree holds. */
export function inspectImage(image: Buffer): ImageSummary {
  const reader = new ImageReader(image);
  const entries = imageToDumpEntries(image);
  const byType: Record<string, number> = {};
  let hardlinks = 0;
  let inlineFiles = 0;
  let externalFiles = 0;
  let whiteouts = 0;
  for (const e of entries) {
    if (e.hardlink) {
      hardlinks++;
      continue;
    }
    const t = (e.mode & S_IFMT) === S_IFCHR && e.rdev === 0 ? 'whiteout' : (typeNames[e.mode & S_IFMT] ?? 'unknown');
    byType[t] = (byType[t] ?? 0) + 1;
    if (t === 'whiteout') whiteouts++;
    if (t === 'file' && e.content) inlineFiles++;
    if (t === 'file' && !e.content && e.size > 0n) externalFiles++;
  }
  const sb = reader.superBlock;
  return {
    size: image.length,
    composefsVersion: reader.header.composefsVersion,
    hasAcl: (reader.header.flags & COMPOSEFS_FLAG_HAS_ACL) !== 0,
    blockSize: 2 ** sb.blockSizeBits,
    blocks: sb.blocks,
    inodes: Number(sb.inodeCount),
    rootNid: sb.rootNid,
    buildTime: { sec: Number(sb.buildTime), nsec: sb.buildTimeNsec },
    xattrBlockAddr: sb.xattrBlockAddr,
    featureCompat: sb.featureCompat,
    entries: entries.length,
    byType,
    hardlinks,
    inlineFiles,
    externalFiles,
    whiteouts,
  };
}

