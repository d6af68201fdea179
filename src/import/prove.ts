// An archive's file contents proven to the broker as the archive is read
// (ProveObjects), instead of hashed here and sent again after AddImage: each
// content is spooled into a sealed memfd as the tar reader yields it and
// queued on the layer's Prover (client/prover.ts); the reader waits while
// the queue is full, so memory stays bounded whatever the size of the layer.
// A content bigger than PROVE_AT_MOST is hashed by the reader instead and
// uploaded after AddImage (a memfd of it would take its size in memory; sent
// as bytes, the broker would have to write a copy of it even when its store
// has it). One prover per layer (one call at a time per user, as the broker
// allows).
import type { MountgateBroker } from '../client/broker.js';
import { Prover, type ProverBounds } from '../client/prover.js';
import { spool } from './upload.js';

/** The biggest content proven (spooled whole into a memfd). */
export const PROVE_AT_MOST = 64 << 20;

/** Spooled memfds hold their contents in memory: bounded in bytes too, queued and in flight. */
const MEMFD_BOUNDS: ProverBounds = { queue: { records: 256, bytes: 32 << 20 }, window: { records: 256, bytes: 64 << 20 } };

export class ContentProver extends Prover {
  constructor(broker: Pick<MountgateBroker, 'proveObjects'>, tally?: { objects: number; bytes: number }) {
    super(broker, tally, MEMFD_BOUNDS);
  }

  /** Spools one file's content (exactly `size` bytes, at most PROVE_AT_MOST) and queues it; resolves with its record number once it is queued. */
  async add(size: number, chunks: AsyncIterable<Buffer>, signal?: AbortSignal): Promise<number> {
    if (size > PROVE_AT_MOST) throw new RangeError(`a content of ${size} bytes is not proven as it is read (at most ${PROVE_AT_MOST})`);
    await this.room();
    const fd = await spool({ digest: `(record ${this.records})`, size, chunks }, signal);
    return this.enqueue(fd, size);
  }
}
