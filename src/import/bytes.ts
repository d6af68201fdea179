// Exact-length reads over a stream of chunks (a file, a pipe, a decompressor),
// without copying more than the pieces a read spans. Every byte handed out
// passes `tap` once, in stream order (the layer's diff ID is computed there).
import { InvalidRequestError } from '../errors.js';

export class ByteSource {
  private readonly iterator: AsyncIterator<Uint8Array>;
  private pieces: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  /** Bytes handed out so far. */
  position = 0;

  constructor(
    chunks: AsyncIterable<Uint8Array>,
    private readonly what: string,
    private readonly tap?: (bytes: Buffer) => void,
  ) {
    this.iterator = chunks[Symbol.asyncIterator]();
  }

  /** Buffers at least `n` bytes, unless the stream ends first; true when it has them. */
  private async fill(n: number): Promise<boolean> {
    while (this.buffered < n && !this.ended) {
      const next = await this.iterator.next();
      if (next.done) {
        this.ended = true;
        break;
      }
      const b = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value.buffer, next.value.byteOffset, next.value.length);
      if (b.length === 0) continue;
      this.pieces.push(b);
      this.buffered += b.length;
    }
    return this.buffered >= n;
  }

  /** Removes up to `n` buffered bytes from the front (at most one piece's worth when `onePiece`). */
  private shift(n: number, onePiece: boolean): Buffer {
    const first = this.pieces[0]!;
    let out: Buffer;
    if (first.length >= n || onePiece) {
      const take = Math.min(n, first.length);
      out = first.subarray(0, take);
      if (take === first.length) this.pieces.shift();
      else this.pieces[0] = first.subarray(take);
    } else {
      out = Buffer.allocUnsafe(n);
      let at = 0;
      while (at < n) {
        const p = this.pieces[0]!;
        const take = Math.min(n - at, p.length);
        p.copy(out, at, 0, take);
        at += take;
        if (take === p.length) this.pieces.shift();
        else this.pieces[0] = p.subarray(take);
      }
    }
    this.buffered -= out.length;
    this.position += out.length;
    this.tap?.(out);
    return out;
  }

  /** Exactly `n` bytes; undefined at a clean end (no byte left); an error when the stream ends inside them. */
  async read(n: number): Promise<Buffer | undefined> {
    if (!(await this.fill(n))) {
      if (this.buffered === 0) return undefined;
      throw new InvalidRequestError(`${this.what} is truncated: it ends ${this.buffered} byte(s) into a ${n}-byte block at offset ${this.position}`);
    }
    return this.shift(n, false);
  }

  /** Exactly `n` bytes, as the pieces they arrive in. */
  async *take(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.buffered === 0 && !(await this.fill(1))) {
        throw new InvalidRequestError(`${this.what} is truncated: it ends ${left} byte(s) before the end of an entry's data, at offset ${this.position}`);
      }
      const piece = this.shift(Math.min(left, 1 << 20), true);
      left -= piece.length;
      yield piece;
    }
  }

  /** Consumes `n` bytes. */
  async skip(n: number): Promise<void> {
    for await (const _ of this.take(n));
  }

  /** Consumes everything that is left; returns how many bytes that was. */
  async drain(onPiece?: (b: Buffer) => void): Promise<number> {
    let n = 0;
    while (this.buffered > 0 || (await this.fill(1))) {
      const piece = this.shift(this.buffered, true);
      onPiece?.(piece);
      n += piece.length;
    }
    return n;
  }
}
