// The objects an image needs, as a build helper hands them to the front:
// packed, one record per object (its fs-verity digest raw, then its size),
// sorted by digest. The front checks a list a slice per turn of its event
// loop and decodes it a slice at a time as the image's rows are added
// (images.ts), so no turn converts every object of a big image: the JSON
// object this replaces (digest hex -> size, 8 MB for 100k objects) took up
// to 0.2 s of the front's loop to read and parse in one.

/** One record: the digest (32 bytes), then the size (unsigned 64-bit, little-endian). */
export const objectRecordBytes = 40;
const digestBytes = 32;

/** Records checked per turn of the event loop (each a compare and two reads: well under a millisecond a slice). */
const checkPerTurn = 4096;

/** The size in the record at byte `at`; NaN past 2^53 - 1 (a size no file has, and no number holds exactly). */
function sizeAt(records: Buffer, at: number): number {
  const high = records.readUInt32LE(at + digestBytes + 4);
  return high >= 2 ** 21 ? NaN : high * 2 ** 32 + records.readUInt32LE(at + digestBytes);
}

export class ObjectList {
  private constructor(
    /** The packed records, count * objectRecordBytes bytes. */
    readonly records: Buffer,
  ) {}

  /** Packs digest (hex) -> size, sorted by digest. For the build helper: there nothing else waits on the loop. */
  static pack(objects: Record<string, number>): ObjectList {
    const digests = Object.keys(objects).sort();
    const records = Buffer.alloc(digests.length * objectRecordBytes);
    digests.forEach((d, k) => {
      const at = k * objectRecordBytes;
      const size = objects[d]!;
      if (records.write(d, at, digestBytes, 'hex') !== digestBytes || !Number.isSafeInteger(size) || size < 1) throw new RangeError(`object ${d} (${size} bytes) cannot be packed`);
      records.writeUInt32LE(size % 2 ** 32, at + digestBytes);
      records.writeUInt32LE(Math.floor(size / 2 ** 32), at + digestBytes + 4);
    });
    return new ObjectList(records);
  }

  /**
   * Takes packed records from a build helper, checked `per` records per turn
   * of the event loop: `count` whole records, digests strictly ascending (so
   * none twice), sizes from 1 to 2^53 - 1. A helper that sent anything else
   * is refused before any of it reaches the store.
   */
  static async check(records: Buffer, count: number, per = checkPerTurn): Promise<ObjectList> {
    if (!Number.isSafeInteger(count) || count < 0 || records.length !== count * objectRecordBytes) {
      throw new Error(`the image builder sent ${records.length} bytes of object records for ${count} objects`);
    }
    if (!(per >= 1)) throw new RangeError(`records per turn must be at least 1, not ${per}`);
    for (let k = 0; k < count; k++) {
      if (k > 0 && k % per === 0) await new Promise((resolve) => setImmediate(resolve));
      const at = k * objectRecordBytes;
      // This digest against the one before: 1 when the one before sorts first.
      if (k > 0 && records.compare(records, at - objectRecordBytes, at - objectRecordBytes + digestBytes, at, at + digestBytes) <= 0) {
        throw new Error(`the image builder sent object ${k} (${records.toString('hex', at, at + digestBytes)}) out of order or twice`);
      }
      const size = sizeAt(records, at);
      if (!(size >= 1)) throw new Error(`the image builder sent object ${k} (${records.toString('hex', at, at + digestBytes)}) with a size of no file`);
    }
    return new ObjectList(records);
  }

  get count(): number {
    return this.records.length / objectRecordBytes;
  }

  /** Objects `from` to `to` (exclusive) as [digest hex, size]: the rows of one turn. */
  slice(from: number, to: number): [digest: string, size: number][] {
    const out: [string, number][] = [];
    for (let k = from; k < Math.min(to, this.count); k++) {
      const at = k * objectRecordBytes;
      out.push([this.records.toString('hex', at, at + digestBytes), sizeAt(this.records, at)]);
    }
    return out;
  }
}
