// An archive's file contents proven to the broker as the archive is read
// (ProveObjects), instead of hashed here and sent again after AddImage: each
// content is spooled into a sealed memfd as the tar reader yields it and
// passed as an fd on one ProveObjects stream; the broker hashes it, holds it
// for the AddImage that follows, and answers the digests in order at the end.
// The reader waits while the queue of spooled contents is full, so memory
// stays bounded whatever the size of the layer; a content bigger than
// PROVE_AT_MOST is hashed by the reader instead and uploaded after AddImage
// (a memfd of it would take its size in memory; sent as bytes, the broker
// would have to write a copy of it even when its store has it). One prover
// per layer (one call at a time per user, as the broker allows).
import type { MountgateBroker } from '../client/broker.js';
import { closeFd } from '../client/broker.js';
import { sendObjects, UNCLAIMED_DIGEST, type OutgoingObject, type SendWindow } from '../client/images.js';
import { socketpair } from '../sys/syscalls.js';
import { spool } from './upload.js';

/** Contents spooled and not yet sent, at most (beside what the stream has in flight). */
const QUEUE: SendWindow = { records: 256, bytes: 32 << 20 };
/** What may be in flight on the stream. */
const WINDOW: SendWindow = { records: 256, bytes: 64 << 20 };
/** The biggest content proven (spooled whole into a memfd). */
export const PROVE_AT_MOST = 64 << 20;

export class ContentProver {
  private readonly queue: OutgoingObject[] = [];
  private queuedBytes = 0;
  private wakeTaker: (() => void) | undefined;
  private wakeAdders: (() => void)[] = [];
  private ended = false;
  private aborted = false;
  private failure: unknown;
  private count = 0;
  private call: Promise<{ digests: string[]; objects: number; bytes: number }> | undefined;
  private sent: Promise<void> | undefined;

  /** `tally`: the objects and bytes proven are added to it (one tally for the layers of an image). */
  constructor(
    private readonly broker: Pick<MountgateBroker, 'proveObjects'>,
    private readonly tally: { objects: number; bytes: number } = { objects: 0, bytes: 0 },
  ) {}

  /** Spools one file's content (exactly `size` bytes, at most PROVE_AT_MOST) and queues it; resolves with its record number once it is queued. */
  async add(size: number, chunks: AsyncIterable<Buffer>, signal?: AbortSignal): Promise<number> {
    if (size > PROVE_AT_MOST) throw new RangeError(`a content of ${size} bytes is not proven as it is read (at most ${PROVE_AT_MOST})`);
    this.call ??= this.start();
    while (this.failure === undefined && (this.queue.length >= QUEUE.records || this.queuedBytes >= QUEUE.bytes)) await new Promise<void>((r) => this.wakeAdders.push(r));
    if (this.failure !== undefined) throw this.failure;
    const record = this.count++;
    const fd = await spool({ digest: `(record ${record})`, size, chunks }, signal);
    this.queue.push({ digest: UNCLAIMED_DIGEST, size, fd });
    this.queuedBytes += size;
    this.wake();
    return record;
  }

  /** Ends the stream; resolves with every record's digest, in order. */
  async finish(): Promise<string[]> {
    if (!this.call) return [];
    this.ended = true;
    this.wake();
    const [s, c] = await Promise.allSettled([this.sent!, this.call]);
    if (c.status === 'rejected') throw c.reason;
    if (s.status === 'rejected') throw s.reason;
    if (c.value.digests.length !== this.count) throw new Error(`the broker answered ${c.value.digests.length} digest(s) for ${this.count} content(s)`);
    this.tally.objects += c.value.objects;
    this.tally.bytes += c.value.bytes;
    return c.value.digests;
  }

  /**
   * Stops after a failure of the reading: what is queued is closed, and the
   * stream is cut inside a record, so the broker refuses the call and holds
   * nothing of it.
   */
  async abort(): Promise<void> {
    if (!this.call) return;
    this.aborted = true;
    this.failure ??= new Error('the import stopped');
    for (const o of this.queue.splice(0)) if ('fd' in o) closeFd(o.fd);
    this.wake();
    await Promise.allSettled([this.sent!, this.call]);
  }

  private start(): Promise<{ digests: string[]; objects: number; bytes: number }> {
    const [readFd, writeFd] = socketpair();
    const proved = this.broker.proveObjects(readFd).finally(() => closeFd(readFd));
    proved.catch((err: unknown) => this.fail(err));
    this.sent = sendObjects(writeFd, (room) => this.take(room), () => undefined, proved, WINDOW);
    this.sent.catch((err: unknown) => this.fail(err));
    return proved;
  }

  private async take(room: SendWindow): Promise<OutgoingObject[] | undefined> {
    while (this.queue.length === 0 && !this.ended && !this.aborted) await new Promise<void>((r) => (this.wakeTaker = r));
    // A record cut short (its header says one byte, none follows): the broker refuses the stream.
    if (this.aborted) return [{ digest: UNCLAIMED_DIGEST, size: 1, chunks: (async function* () {})() }];
    if (this.queue.length === 0) return undefined;
    let n = 0;
    let bytes = 0;
    while (n < this.queue.length && n < room.records && (n === 0 || bytes < room.bytes)) bytes += this.queue[n++]!.size;
    const group = this.queue.splice(0, n);
    this.queuedBytes -= bytes;
    const adders = this.wakeAdders;
    this.wakeAdders = [];
    for (const w of adders) w();
    return group;
  }

  private fail(err: unknown): void {
    this.failure ??= err;
    for (const o of this.queue.splice(0)) if ('fd' in o) closeFd(o.fd);
    this.wake();
  }

  private wake(): void {
    const t = this.wakeTaker;
    this.wakeTaker = undefined;
    t?.();
    const adders = this.wakeAdders;
    this.wakeAdders = [];
    for (const w of adders) w();
  }
}
