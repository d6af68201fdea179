// One ProveObjects call fed while its contents are still being found: a
// directory walk queues each file it meets as an open fd, an archive's reader
// each content it spools into a memfd (import/prove.ts), and the stream sends
// them as the window allows, so the broker hashes while the walk or the read
// goes on instead of after it. The broker hashes every record, holds it for
// the AddImage that follows and answers the digests in order at the end. The
// queue is bounded (the adder waits), so open fds and memory stay bounded
// whatever the size of the tree (in bytes too, for memfds: see ProverBounds);
// one call at a time per user, as the broker allows.
import { closeSync, constants as fsConstants, fstatSync, openSync } from 'node:fs';
import { InvalidRequestError } from '../errors.js';
import { showText } from '../manifest/text.js';
import { socketpair } from '../sys/syscalls.js';
import { closeFd, type MountgateBroker } from './broker.js';
import { sendObjects, UNCLAIMED_DIGEST, type OutgoingObject, type SendWindow } from './images.js';

/** How much a prover keeps queued (not yet sent) and in flight on the stream, at most. */
export interface ProverBounds {
  queue: SendWindow;
  window: SendWindow;
}
/**
 * Open files: records only. An fd costs no memory here, and a bound in bytes
 * would keep a large file's neighbours out of the broker's second hashing
 * thread.
 */
const FILE_BOUNDS: ProverBounds = { queue: { records: 256, bytes: Infinity }, window: { records: 256, bytes: Infinity } };
/** Records queued between two turns of the event loop given to the stream (its acknowledgements, its sends): a walk never waits otherwise while the queue has room. */
const YIELD_EVERY = 64;
/**
 * Records (or bytes) queued that make a group worth sending at once; fewer go
 * at the next turn of the event loop. Woken for every record, the stream sent
 * one fd a message and the helper handed its threads one file at a time
 * (image add /usr: 54 s to walk and prove, against 24.5 s for sha256sum).
 */
const GROUP = { records: 64, bytes: 4 << 20 };

export class Prover {
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
  /** A wake of the stream is due at the next turn of the event loop (for a group smaller than GROUP). */
  private flushArmed = false;
  /** Hears of the bytes of each group of records passed to the broker (for progress). */
  onPassed: (bytes: number) => void = () => undefined;

  /** `tally`: the objects and bytes proven are added to it (one tally for the calls of an image). */
  constructor(
    private readonly broker: Pick<MountgateBroker, 'proveObjects'>,
    private readonly tally: { objects: number; bytes: number } = { objects: 0, bytes: 0 },
    private readonly bounds: ProverBounds = FILE_BOUNDS,
  ) {}

  /** Records queued so far. */
  get records(): number {
    return this.count;
  }

  /**
   * Opens a file (no symlink followed) and queues it, `size` being the size
   * the walk saw (a file that changed since is an error naming it); resolves
   * with its record number once it is queued.
   */
  async addFile(path: string | Buffer, size: number): Promise<number> {
    await this.room();
    const fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
    try {
      const now = fstatSync(fd).size;
      if (now !== size) throw new InvalidRequestError(`${showText(path)} changed while the tree was read (${size} bytes, now ${now})`);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    return this.enqueue(fd, size);
  }

  /** Ends the stream; resolves with every record's digest, in order. */
  async finish(): Promise<string[]> {
    if (!this.call) return [];
    this.ended = true;
    this.wake();
    const [s, c] = await Promise.allSettled([this.sent!, this.call]);
    if (c.status === 'rejected') throw c.reason;
    if (s.status === 'rejected') throw s.reason;
    if (c.value.digests.length !== this.count) throw new Error(`the broker answered ${c.value.digests.length} digest(s) for ${this.count} record(s)`);
    this.tally.objects += c.value.objects;
    this.tally.bytes += c.value.bytes;
    return c.value.digests;
  }

  /**
   * Stops after a failure of the walk or the reading: what is queued is
   * closed, and the stream is cut inside a record, so the broker refuses the
   * call and holds nothing of it.
   */
  async abort(): Promise<void> {
    if (!this.call) return;
    this.aborted = true;
    this.failure ??= new Error('the import stopped');
    for (const o of this.queue.splice(0)) if ('fd' in o) closeFd(o.fd);
    this.wake();
    await Promise.allSettled([this.sent!, this.call]);
  }

  /** Waits until the queue has room for one more record (starting the call on the first); throws the stream's failure. */
  protected async room(): Promise<void> {
    this.call ??= this.start();
    if (this.count % YIELD_EVERY === YIELD_EVERY - 1) await new Promise<void>((r) => setImmediate(r));
    while (this.failure === undefined && (this.queue.length >= this.bounds.queue.records || this.queuedBytes >= this.bounds.queue.bytes)) await new Promise<void>((r) => this.wakeAdders.push(r));
    if (this.failure !== undefined) throw this.failure;
  }

  /** Queues an fd holding `size` bytes (owned from here on); its record number. */
  protected enqueue(fd: number, size: number): number {
    if (this.failure !== undefined) {
      closeFd(fd);
      throw this.failure;
    }
    this.queue.push({ digest: UNCLAIMED_DIGEST, size, fd });
    this.queuedBytes += size;
    if (this.queue.length >= GROUP.records || this.queuedBytes >= GROUP.bytes) this.wake();
    else if (!this.flushArmed) {
      this.flushArmed = true;
      setImmediate(() => {
        this.flushArmed = false;
        this.wake();
      });
    }
    return this.count++;
  }

  private start(): Promise<{ digests: string[]; objects: number; bytes: number }> {
    const [readFd, writeFd] = socketpair();
    const proved = this.broker.proveObjects(readFd).finally(() => closeFd(readFd));
    proved.catch((err: unknown) => this.fail(err));
    this.sent = sendObjects(writeFd, (room) => this.take(room), (group) => this.onPassed(group.reduce((n, o) => n + o.size, 0)), proved, this.bounds.window);
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
    this.wakeAdding();
    return group;
  }

  private fail(err: unknown): void {
    this.failure ??= err;
    for (const o of this.queue.splice(0)) if ('fd' in o) closeFd(o.fd);
    this.wake();
  }

  /** Wakes the stream's taker and every adder waiting for room. */
  private wake(): void {
    const t = this.wakeTaker;
    this.wakeTaker = undefined;
    t?.();
    this.wakeAdding();
  }

  private wakeAdding(): void {
    const adders = this.wakeAdders;
    this.wakeAdders = [];
    for (const w of adders) w();
  }
}

/**
 * A Prover for manifestFromDirectory (what it proves added to `tally`), when
 * the broker's policy lets you call ProveObjects: the broker hashes the files
 * and holds them for the AddImage that follows. Undefined from an older
 * broker or a policy without it: the files are then hashed here, as before.
 */
export async function proveWith(broker: Pick<MountgateBroker, 'proveObjects' | 'allows'>, tally: { objects: number; bytes: number } = { objects: 0, bytes: 0 }): Promise<Prover | undefined> {
  if (!(await broker.allows('ProveObjects'))) return undefined;
  return new Prover(broker, tally);
}
