// Reading the PutObjects record stream from a pipe or socket fd without ever
// blocking an event loop: a net.Socket over a pipe, a usocket (recvmsg, so
// that fds passed along arrive too) over an AF_UNIX stream socket, read as
// exact-length pieces. Records: 32 bytes raw digest, 8 bytes little-endian
// size, content (or, with the size's top bit set, the next fd passed).
import { closeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Socket } from 'node:net';
import type { EventEmitter } from 'node:events';
import { setCloexec } from '../sys/syscalls.js';

const require = createRequire(import.meta.url);
interface USocket extends EventEmitter {
  read(size: number | null, fdCount: number | null): { data: Buffer | null; fds: number[] } | null;
  write(chunk: { data?: Buffer; fds?: number[]; callback?: () => void }): boolean;
  destroy(): void;
}

/** One piece from the source: bytes, fds received with them, or the end. */
type Pull = () => Promise<{ data: Buffer | null; fds: number[] } | null>;

export class StreamReader {
  private pending: Buffer = Buffer.alloc(0);
  private ended = false;
  /** Fds received and not yet taken, in the order they came. */
  private readonly fdQueue: number[] = [];
  /** Called before the reader waits for more bytes (to flush acknowledgements the sender may be waiting for). */
  onWait: () => void = () => undefined;

  private constructor(private readonly pull: Pull, private readonly destroy: () => void, readonly write?: (data: Buffer) => void) {}

  /** Opens a reader over a pipe fd (or a socket whose fds are not wanted); the reader owns (and closes) the fd. */
  static fromFd(fd: number, idleMs: number): StreamReader {
    const socket = new Socket({ fd, readable: true, writable: false, allowHalfOpen: true });
    socket.setTimeout(idleMs, () => socket.destroy(new Error(`no data for ${Math.round(idleMs / 1000)} s`)));
    const iterator = socket[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    return new StreamReader(
      async () => {
        const next = await iterator.next();
        return next.done ? null : { data: next.value, fds: [] };
      },
      () => socket.destroy(),
    );
  }

  /** Opens a reader over a connected AF_UNIX stream socket fd, receiving fds passed with the bytes; it can write back. */
  static fromUnixSocket(fd: number, idleMs: number): StreamReader {
    const { USocket } = require('usocket') as { USocket: new (opts: { fd: number }) => USocket };
    const socket = new USocket({ fd });
    let failure: Error | undefined;
    let ended = false;
    let wake: (() => void) | undefined;
    const poke = () => {
      const w = wake;
      wake = undefined;
      w?.();
    };
    socket.on('fds', (fds: number[]) => fds.forEach(setCloexec));
    socket.on('readable', poke);
    socket.on('end', () => {
      ended = true;
      poke();
    });
    socket.on('error', (err: Error) => {
      failure = err;
      poke();
    });
    const pull: Pull = async () => {
      for (;;) {
        if (failure) throw failure;
        const got = socket.read(null, null);
        if (got && (got.data || got.fds.length > 0)) return got;
        if (ended) return null;
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no data for ${Math.round(idleMs / 1000)} s`)), idleMs);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    };
    return new StreamReader(pull, () => socket.destroy(), (data) => void socket.write({ data }));
  }

  private async fill(): Promise<boolean> {
    if (this.ended) return false;
    this.onWait();
    const next = await this.pull();
    if (!next) {
      this.ended = true;
      return false;
    }
    this.fdQueue.push(...next.fds);
    if (next.data && next.data.length > 0) this.pending = this.pending.length === 0 ? next.data : Buffer.concat([this.pending, next.data]);
    return true;
  }

  /** Exactly n bytes; undefined at a clean end of stream before any byte; throws on a truncated piece. */
  async readExact(n: number): Promise<Buffer | undefined> {
    while (this.pending.length < n) {
      if (!(await this.fill())) {
        if (this.pending.length === 0) return undefined;
        throw new Error(`the stream ended inside a record header (${this.pending.length} of ${n} bytes)`);
      }
    }
    const out = this.pending.subarray(0, n);
    this.pending = this.pending.subarray(n);
    return out;
  }

  /** The next `size` bytes as a sequence of chunks; throws if the stream ends early. */
  async *chunks(size: number): AsyncGenerator<Buffer> {
    let left = size;
    while (left > 0) {
      if (this.pending.length === 0 && !(await this.fill())) throw new Error(`the stream ended ${left} bytes before the end of an object`);
      const take = Math.min(left, this.pending.length);
      yield this.pending.subarray(0, take);
      this.pending = this.pending.subarray(take);
      left -= take;
    }
  }

  /** The oldest fd received and not yet taken (the caller owns it from then on); undefined when none came. */
  takeFd(): number | undefined {
    return this.fdQueue.shift();
  }

  /** How many fds were received and not taken. */
  get queuedFds(): number {
    return this.fdQueue.length;
  }

  close(): void {
    for (const fd of this.fdQueue.splice(0)) {
      try {
        closeSync(fd);
      } catch {
        // already gone
      }
    }
    this.destroy();
  }
}
