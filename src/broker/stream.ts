// Reading the PutObjects record stream from a pipe or socket fd without ever
// blocking the event loop: a net.Socket over the fd, read as exact-length
// pieces. Records: 32 bytes raw digest, 8 bytes little-endian size, content.
import { Socket } from 'node:net';

export class StreamReader {
  private readonly iterator: AsyncIterator<Buffer>;
  private pending: Buffer = Buffer.alloc(0);
  private ended = false;

  constructor(private readonly socket: Socket) {
    this.iterator = socket[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }

  /** Opens a reader over a pipe/socket fd; the socket owns (and closes) the fd. */
  static fromFd(fd: number, idleMs: number): StreamReader {
    const socket = new Socket({ fd, readable: true, writable: false, allowHalfOpen: true });
    socket.setTimeout(idleMs, () => socket.destroy(new Error(`no data for ${Math.round(idleMs / 1000)} s`)));
    return new StreamReader(socket);
  }

  private async fill(): Promise<boolean> {
    if (this.ended) return false;
    const next = await this.iterator.next();
    if (next.done) {
      this.ended = true;
      return false;
    }
    this.pending = this.pending.length === 0 ? next.value : Buffer.concat([this.pending, next.value]);
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

  close(): void {
    this.socket.destroy();
  }
}
