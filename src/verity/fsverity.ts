// fs-verity file digests computed in software: the sha256 Merkle tree over
// 4 KiB blocks (no salt) and the digest of the fs-verity descriptor that names
// it, byte for byte what `fsverity digest FILE` prints and what the kernel
// measures. Streaming: feed any number of chunks, memory stays O(tree depth).
import * as crypto from 'node:crypto';
import type { Readable } from 'node:stream';

export const FSVERITY_BLOCK_SIZE = 4096;
const HASH_SIZE = 32;
const HASHES_PER_BLOCK = FSVERITY_BLOCK_SIZE / HASH_SIZE;
const DESCRIPTOR_SIZE = 256;
const HASH_ALG_SHA256 = 1;
const LOG_BLOCK_SIZE = 12;

/** One-shot sha256 (crypto.hash, Node 20.12 and later: no Hash object per 4 KiB block). */
const sha256: (data: Uint8Array) => Buffer =
  typeof crypto.hash === 'function' ? (data) => crypto.hash('sha256', data, 'buffer') : (data) => crypto.createHash('sha256').update(data).digest();

/** One level of the Merkle tree: the block of hashes being filled. */
interface TreeLevel {
  block: Buffer;
  filled: number;
}

export class FsVerityHasher {
  private readonly dataBlock = Buffer.alloc(FSVERITY_BLOCK_SIZE);
  private dataFilled = 0;
  private dataSize = 0;
  /** The tree levels' buffers (kept across reset) and how many of them this file uses. */
  private readonly levels: TreeLevel[] = [];
  private depth = 0;
  private finished = false;

  update(chunk: Uint8Array): this {
    if (this.finished) throw new Error('FsVerityHasher: update after digest');
    let offset = 0;
    // Whole blocks straight from the chunk, with no copy into the block buffer.
    if (this.dataFilled === 0) {
      for (; chunk.length - offset >= FSVERITY_BLOCK_SIZE; offset += FSVERITY_BLOCK_SIZE) this.addHash(0, sha256(chunk.subarray(offset, offset + FSVERITY_BLOCK_SIZE)));
    }
    while (offset < chunk.length) {
      const take = Math.min(FSVERITY_BLOCK_SIZE - this.dataFilled, chunk.length - offset);
      this.dataBlock.set(chunk.subarray(offset, offset + take), this.dataFilled);
      this.dataFilled += take;
      offset += take;
      if (this.dataFilled === FSVERITY_BLOCK_SIZE) this.flushDataBlock();
    }
    this.dataSize += chunk.length;
    return this;
  }

  /** Starts over for another file, keeping the buffers (a hasher per worker, not per object). */
  reset(): this {
    this.dataFilled = 0;
    this.dataSize = 0;
    for (const l of this.levels) l.filled = 0;
    this.depth = 0;
    this.finished = false;
    this.root = Buffer.alloc(HASH_SIZE);
    return this;
  }

  /** The 32-byte fs-verity digest (sha256 of the descriptor). */
  digest(): Buffer {
    return sha256(this.descriptor());
  }

  /** The Merkle tree root; all zeros for an empty file. */
  rootHash(): Buffer {
    if (!this.finished) this.finish();
    return this.root;
  }

  private root = Buffer.alloc(HASH_SIZE);

  /** The 256-byte fs-verity descriptor whose sha256 is the file digest. */
  descriptor(): Buffer {
    const root = this.rootHash();
    const d = Buffer.alloc(DESCRIPTOR_SIZE);
    d.writeUInt8(1, 0); // version
    d.writeUInt8(HASH_ALG_SHA256, 1);
    d.writeUInt8(LOG_BLOCK_SIZE, 2);
    d.writeUInt8(0, 3); // salt size
    d.writeBigUInt64LE(BigInt(this.dataSize), 8);
    root.copy(d, 16);
    return d;
  }

  private flushDataBlock(): void {
    // The last block is zero-padded before hashing.
    this.dataBlock.fill(0, this.dataFilled);
    this.addHash(0, sha256(this.dataBlock));
    this.dataFilled = 0;
  }

  private addHash(level: number, hash: Buffer): void {
    let l = this.levels[level];
    if (!l) {
      l = { block: Buffer.alloc(FSVERITY_BLOCK_SIZE), filled: 0 };
      this.levels.push(l);
    }
    if (level >= this.depth) this.depth = level + 1;
    hash.copy(l.block, l.filled * HASH_SIZE);
    l.filled++;
    if (l.filled === HASHES_PER_BLOCK) this.flushLevel(level);
  }

  private flushLevel(level: number): void {
    const l = this.levels[level]!;
    l.block.fill(0, l.filled * HASH_SIZE);
    const h = sha256(l.block);
    l.filled = 0;
    this.addHash(level + 1, h);
  }

  private finish(): void {
    this.finished = true;
    if (this.dataSize === 0) return; // root stays all zeros
    if (this.dataFilled > 0) this.flushDataBlock();
    // Walk up: the root is the single hash left on the highest level.
    for (let level = 0; ; level++) {
      const l = this.levels[level]!;
      const isTop = level === this.depth - 1;
      if (isTop && l.filled === 1) {
        this.root = Buffer.from(l.block.subarray(0, HASH_SIZE));
        return;
      }
      if (l.filled > 0) this.flushLevel(level);
    }
  }
}

/** fs-verity sha256 digest of an in-memory byte string. */
export function fsverityDigest(data: Uint8Array): Buffer {
  return new FsVerityHasher().update(data).digest();
}

/** Same as fsverityDigest, as 64 lowercase hex characters. */
export function fsverityDigestHex(data: Uint8Array): string {
  return fsverityDigest(data).toString('hex');
}

/** Streams a readable (a file, a pipe, a socket) through the hasher. */
export async function fsverityDigestOfStream(stream: Readable): Promise<Buffer> {
  const hasher = new FsVerityHasher();
  for await (const chunk of stream) hasher.update(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Uint8Array));
  return hasher.digest();
}
