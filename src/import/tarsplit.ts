// What rebuilds an imported layer's tar stream byte for byte, as
// containers/storage's tar-split does: every byte that is not file content
// (headers, extension records, padding, the end blocks) kept as it was read,
// and for each regular file the digest of its content, its size and, for a
// sparse file, where its stored segments lie. With the contents (read back
// through a mount of the image) that is the whole archive again, and its
// sha256 is the layer's diff ID.
//
// Encoding (gzip over): "MGTS1\n", then records: 0x01 u32 n, n raw bytes;
// 0x02 32-byte digest (zeros for an empty file), u64 size, u64 stored bytes,
// u32 segment count, then (u64 offset, u64 length) per segment.
import { gunzipSync, gzipSync } from 'node:zlib';
import type { SplitSink, TarEntry } from './tar.js';

const MAGIC = Buffer.from('MGTS1\n');
const RAW = 1;
const FILE = 2;

export interface SplitFile {
  /** Hex fs-verity digest of the logical content; undefined for an empty file. */
  digest?: string;
  size: number;
  /** Bytes the archive stores for it: the size, or a sparse file's segments. */
  stored: number;
  sparse?: { offset: number; length: number }[];
}

export type SplitRecord = { raw: Buffer } | { file: SplitFile };

/** Collects a layer's split while the tar reader reads it; digests are given afterwards, in archive order. */
export class TarSplitRecorder implements SplitSink {
  private readonly records: SplitRecord[] = [];
  private raws: Buffer[] = [];
  private files: SplitFile[] = [];

  raw(bytes: Buffer): void {
    // The reader may reuse its buffers: keep a copy.
    this.raws.push(Buffer.from(bytes));
  }

  content(entry: TarEntry, storedBytes: number): void {
    this.flushRaw();
    const file: SplitFile = { size: entry.size, stored: storedBytes, ...(entry.sparse ? { sparse: entry.sparse.map((s) => ({ offset: s.offset, length: s.length })) } : {}) };
    this.files.push(file);
    this.records.push({ file });
  }

  private flushRaw(): void {
    if (this.raws.length === 0) return;
    this.records.push({ raw: Buffer.concat(this.raws) });
    this.raws = [];
  }

  /** The split, with each file's digest from `fileDigests` (the reader's, one per regular file in archive order). */
  finish(fileDigests: (string | undefined)[]): SplitRecord[] {
    this.flushRaw();
    if (fileDigests.length !== this.files.length) throw new Error(`tar split: ${this.files.length} files recorded, ${fileDigests.length} digests`);
    this.files.forEach((f, k) => {
      const d = fileDigests[k];
      if (d !== undefined) f.digest = d;
    });
    return this.records;
  }
}

export function encodeSplit(records: SplitRecord[]): Buffer {
  const parts: Buffer[] = [MAGIC];
  for (const r of records) {
    if ('raw' in r) {
      const head = Buffer.alloc(5);
      head[0] = RAW;
      head.writeUInt32LE(r.raw.length, 1);
      parts.push(head, r.raw);
    } else {
      const f = r.file;
      const segs = f.sparse ?? [];
      const b = Buffer.alloc(1 + 32 + 8 + 8 + 4 + segs.length * 16);
      b[0] = FILE;
      if (f.digest) Buffer.from(f.digest, 'hex').copy(b, 1);
      b.writeBigUInt64LE(BigInt(f.size), 33);
      b.writeBigUInt64LE(BigInt(f.stored), 41);
      b.writeUInt32LE(segs.length, 49);
      segs.forEach((s, k) => {
        b.writeBigUInt64LE(BigInt(s.offset), 53 + k * 16);
        b.writeBigUInt64LE(BigInt(s.length), 61 + k * 16);
      });
      parts.push(b);
    }
  }
  // Level 1: the headers compress nearly as well (they are mostly zeros and repeats), in a fraction of level 6's time on the import's path.
  return gzipSync(Buffer.concat(parts), { level: 1 });
}

export function decodeSplit(data: Buffer): SplitRecord[] {
  const b = gunzipSync(data);
  if (!b.subarray(0, MAGIC.length).equals(MAGIC)) throw new Error('not a mountgate tar split');
  const out: SplitRecord[] = [];
  for (let at = MAGIC.length; at < b.length;) {
    const type = b[at];
    if (type === RAW) {
      const n = b.readUInt32LE(at + 1);
      out.push({ raw: b.subarray(at + 5, at + 5 + n) });
      at += 5 + n;
    } else if (type === FILE) {
      const digest = b.subarray(at + 1, at + 33);
      const count = b.readUInt32LE(at + 49);
      const sparse = Array.from({ length: count }, (_, k) => ({ offset: Number(b.readBigUInt64LE(at + 53 + k * 16)), length: Number(b.readBigUInt64LE(at + 61 + k * 16)) }));
      out.push({
        file: {
          ...(digest.some((x) => x !== 0) ? { digest: digest.toString('hex') } : {}),
          size: Number(b.readBigUInt64LE(at + 33)),
          stored: Number(b.readBigUInt64LE(at + 41)),
          ...(count > 0 ? { sparse } : {}),
        },
      });
      at += 53 + count * 16;
    } else {
      throw new Error(`tar split: unknown record ${type} at ${at}`);
    }
  }
  return out;
}
