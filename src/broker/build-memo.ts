// AddImage of a manifest the broker has built before: the same bytes build
// the same image (the writer is deterministic and the manifest names
// everything: files, owners, the image's name and what it is kept for), so
// while that image is stored, what its build found is reused and no build
// helper runs. This is what importing the same tree again costs, by the same
// user or by another: 0.25-0.55 s of a build helper's start, parse and write
// for the debootstrap tree, against reading and hashing the manifest here.
//
// The key is the manifest's SHA-256 with the limits its build was held to
// (a stricter policy since must build again). The manifest is read off the
// event loop (a sealed memfd: it can neither stall nor change), a piece per
// turn. Entries are kept only while their image is stored (checked, by the
// caller, in the turn that registers it), at most `maxEntries` and
// `maxObjectBytes` of object lists in all, least recently used first out.
import { createHash } from 'node:crypto';
import { read } from 'node:fs';
import type { BuiltImage } from './image-builder.js';

const pieceBytes = 1 << 20;

/** What a build found, without the image's bytes (they are on disk while the image is stored). */
export type MemoBuild = Omit<BuiltImage, 'image'> & { imageBytes: number };

export class BuildMemo {
  private readonly entries = new Map<string, MemoBuild>();
  private objectBytes = 0;

  constructor(
    private readonly maxEntries = 16,
    private readonly maxObjectBytes = 16 << 20,
  ) {}

  /** The key of the manifest in the sealed memfd `fd` (`size` bytes) built within `limits`. */
  static async key(fd: number, size: number, limits: { maxEntries: number; maxBytes: number }): Promise<string> {
    const hash = createHash('sha256');
    const buf = Buffer.allocUnsafe(Math.min(pieceBytes, Math.max(size, 1)));
    for (let at = 0; at < size; ) {
      const n = await new Promise<number>((resolve, reject) => read(fd, buf, 0, Math.min(buf.length, size - at), at, (err, bytes) => (err ? reject(err) : resolve(bytes))));
      if (n === 0) throw new Error(`the manifest memfd ended after ${at} of ${size} bytes`);
      hash.update(buf.subarray(0, n));
      at += n;
    }
    return `${hash.digest('hex')}:${limits.maxEntries}:${limits.maxBytes}`;
  }

  get(key: string): MemoBuild | undefined {
    const hit = this.entries.get(key);
    if (!hit) return undefined;
    // Most recently used last.
    this.entries.delete(key);
    this.entries.set(key, hit);
    return hit;
  }

  remember(key: string, built: BuiltImage): void {
    const bytes = built.objects.records.length;
    if (bytes > this.maxObjectBytes) return;
    this.forget(key);
    const { image, ...rest } = built;
    this.entries.set(key, { ...rest, imageBytes: image.length });
    this.objectBytes += bytes;
    for (const [k] of this.entries) {
      if (this.entries.size <= this.maxEntries && this.objectBytes <= this.maxObjectBytes) break;
      this.forget(k);
    }
  }

  forget(key: string): void {
    const had = this.entries.get(key);
    if (!had) return;
    this.entries.delete(key);
    this.objectBytes -= had.objects.records.length;
  }

  get size(): number {
    return this.entries.size;
  }
}
