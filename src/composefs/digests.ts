// The fs-verity digests of an image's external files, as the tree holds them:
// 32 bytes each in one buffer outside the JavaScript heap (no 64-character
// string per file for the collector to copy and trace), found again by an
// open-addressing index over those bytes, each with one value of the tree's
// (which file carries the digest as its own). The writer copies a digest's
// bytes into the metacopy and spells its object path from them.
//
// The index hashes all 32 bytes by simple tabulation with tables drawn at
// random for each process: a manifest's digests are the caller's to choose,
// and without the tables no caller can choose digests that pile up in one
// chain of the index.
import { randomFillSync } from 'node:crypto';

export const DIGEST_BYTES = 32;

const TABLES = new Int32Array(DIGEST_BYTES * 256);
randomFillSync(TABLES);

/** The value of a hex digit's character code (either case), or -1. */
const HEX_VALUE = new Int8Array(256).fill(-1);
for (let i = 0; i < 10; i++) HEX_VALUE[0x30 + i] = i;
for (let i = 0; i < 6; i++) {
  HEX_VALUE[0x61 + i] = 10 + i;
  HEX_VALUE[0x41 + i] = 10 + i;
}
const HEX_DIGITS = '0123456789abcdef';
/** A byte's two lowercase hex digits, as character codes. */
const HIGH_DIGIT = new Uint8Array(256);
const LOW_DIGIT = new Uint8Array(256);
for (let b = 0; b < 256; b++) {
  HIGH_DIGIT[b] = HEX_DIGITS.charCodeAt(b >> 4);
  LOW_DIGIT[b] = HEX_DIGITS.charCodeAt(b & 15);
}

/**
 * Digests by a small integer id (the order they were added in), each with a
 * value. A digest is first staged (decoded from its hex into the slot after
 * the last id), then looked up or added: nothing is allocated per digest.
 */
export class DigestPool<T> {
  /** Digest i at 32 * i; the staged one at 32 * count. */
  private bytes = Buffer.allocUnsafe(DIGEST_BYTES * 1024);
  private count = 0;
  /** Open addressing: id + 1 of the digest in each slot, 0 for an empty one; a power of two, at most half full. */
  private slots = new Int32Array(2048);
  private readonly values: T[] = [];

  get size(): number {
    return this.count;
  }

  /** Stages 64 lowercase hex digits given as a string; false (and nothing staged) for anything else. */
  stageString(s: string): boolean {
    if (s.length !== 2 * DIGEST_BYTES) return false;
    const out = this.bytes;
    const at = this.count * DIGEST_BYTES;
    for (let i = 0; i < DIGEST_BYTES; i++) {
      const h = s.charCodeAt(2 * i);
      const l = s.charCodeAt(2 * i + 1);
      if (!isLowerHexDigit(h) || !isLowerHexDigit(l)) return false;
      out[at + i] = (HEX_VALUE[h]! << 4) | HEX_VALUE[l]!;
    }
    return true;
  }

  /** Stages the 64 hex digits (either case, as a dump may spell them) at data[from, from + 64); false for anything else. */
  stageHex(data: Uint8Array, from: number, to: number): boolean {
    if (to - from !== 2 * DIGEST_BYTES) return false;
    const out = this.bytes;
    const at = this.count * DIGEST_BYTES;
    for (let i = 0; i < DIGEST_BYTES; i++) {
      const h = HEX_VALUE[data[from + 2 * i]!]!;
      const l = HEX_VALUE[data[from + 2 * i + 1]!]!;
      if (h < 0 || l < 0) return false;
      out[at + i] = (h << 4) | l;
    }
    return true;
  }

  /** Whether data[from, to) is the object path of the staged digest: "ab/cdef...", in lowercase. */
  isStagedObjectPath(data: Uint8Array, from: number, to: number): boolean {
    if (to - from !== 2 * DIGEST_BYTES + 1 || data[from + 2] !== 0x2f) return false;
    const b = this.bytes;
    const at = this.count * DIGEST_BYTES;
    if (data[from] !== HIGH_DIGIT[b[at]!] || data[from + 1] !== LOW_DIGIT[b[at]!]) return false;
    for (let i = 1, p = from + 3; i < DIGEST_BYTES; i++, p += 2) {
      if (data[p] !== HIGH_DIGIT[b[at + i]!] || data[p + 1] !== LOW_DIGIT[b[at + i]!]) return false;
    }
    return true;
  }

  /** The id of the staged digest, or -1 when the pool does not hold it. */
  findStaged(): number {
    const mask = this.slots.length - 1;
    for (let slot = this.hashStaged() & mask; ; slot = (slot + 1) & mask) {
      const entry = this.slots[slot]!;
      if (entry === 0) return -1;
      if (this.equalsStaged(entry - 1)) return entry - 1;
    }
  }

  /** Adds the staged digest, which the pool does not hold (findStaged said -1), with its value; returns its id. */
  addStaged(value: T): number {
    const id = this.count;
    const mask = this.slots.length - 1;
    let slot = this.hashStaged() & mask;
    while (this.slots[slot] !== 0) slot = (slot + 1) & mask;
    this.slots[slot] = id + 1;
    this.values.push(value);
    this.count++;
    if (2 * this.count > this.slots.length) this.growSlots();
    if ((this.count + 1) * DIGEST_BYTES > this.bytes.length) {
      const bigger = Buffer.allocUnsafe(this.bytes.length * 2);
      this.bytes.copy(bigger, 0, 0, this.count * DIGEST_BYTES);
      this.bytes = bigger;
    }
    return id;
  }

  value(id: number): T {
    return this.values[id]!;
  }

  setValue(id: number, value: T): void {
    this.values[id] = value;
  }

  /** The 32 bytes of digest `id`, at buf[at]. */
  copyTo(id: number, buf: Uint8Array, at: number): void {
    const b = this.bytes;
    const from = id * DIGEST_BYTES;
    for (let i = 0; i < DIGEST_BYTES; i++) buf[at + i] = b[from + i]!; // (no view made per file, as set(subarray) would)
  }

  /** The 64 lowercase hex digits of digest `id`, at buf[at]; with `objectPath`, a "/" after the first two ("ab/cdef..."). */
  writeHex(id: number, buf: Uint8Array, at: number, objectPath: boolean): void {
    const from = id * DIGEST_BYTES;
    const b0 = this.bytes[from]!;
    buf[at] = HIGH_DIGIT[b0]!;
    buf[at + 1] = LOW_DIGIT[b0]!;
    let to = at + 2;
    if (objectPath) buf[to++] = 0x2f;
    for (let i = 1; i < DIGEST_BYTES; i++) {
      const b = this.bytes[from + i]!;
      buf[to] = HIGH_DIGIT[b]!;
      buf[to + 1] = LOW_DIGIT[b]!;
      to += 2;
    }
  }

  /** The 64 lowercase hex digits of digest `id`. */
  hex(id: number): string {
    return this.bytes.toString('hex', id * DIGEST_BYTES, (id + 1) * DIGEST_BYTES);
  }

  private hashStaged(): number {
    return this.hashAt(this.count * DIGEST_BYTES);
  }

  private hashAt(at: number): number {
    const b = this.bytes;
    let h = 0;
    for (let i = 0; i < DIGEST_BYTES; i++) h ^= TABLES[(i << 8) | b[at + i]!]!;
    return h;
  }

  private equalsStaged(id: number): boolean {
    const b = this.bytes;
    const staged = this.count * DIGEST_BYTES;
    const at = id * DIGEST_BYTES;
    for (let i = 0; i < DIGEST_BYTES; i++) if (b[at + i] !== b[staged + i]) return false;
    return true;
  }

  private growSlots(): void {
    const slots = new Int32Array(this.slots.length * 2);
    const mask = slots.length - 1;
    for (let id = 0; id < this.count; id++) {
      let slot = this.hashAt(id * DIGEST_BYTES) & mask;
      while (slots[slot] !== 0) slot = (slot + 1) & mask;
      slots[slot] = id + 1;
    }
    this.slots = slots;
  }
}

function isLowerHexDigit(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66);
}
