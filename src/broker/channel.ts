// The private channel between the broker's front and its executor: one end
// of a socketpair each, frames of JSON with fds passed alongside (SCM_RIGHTS,
// through usocket). A frame is a 4-byte little-endian length and that many
// bytes of JSON whose `fds` field says how many descriptors travel with it;
// they are sent with the frame's first byte, so they are queued by the time
// the frame is complete.
import { EventEmitter } from 'node:events';
import { closeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { setCloexec } from '../sys/syscalls.js';

const require = createRequire(import.meta.url);
interface USocket extends EventEmitter {
  read(size: number | null, fdCount: number | null): { data: Buffer | null; fds: number[] } | null;
  write(chunk: { data?: Buffer; fds?: number[]; callback?: () => void }): boolean;
  destroy(): void;
}
const { USocket } = require('usocket') as { USocket: new (opts: { fd: number }) => USocket };

/** Largest frame either side accepts: plans and replies are small. */
const maxFrameBytes = 1 << 20;

export interface Frame {
  [key: string]: unknown;
}

export class Channel extends EventEmitter {
  private readonly socket: USocket;
  private pending: Buffer = Buffer.alloc(0);
  private readonly fdQueue: number[] = [];
  private closed = false;

  /** Takes ownership of `fd`, one end of a connected AF_UNIX stream socketpair. */
  constructor(fd: number) {
    super();
    // An end passed as a child's stdio arrives inheritable: no helper of this process may hold the channel.
    setCloexec(fd);
    this.socket = new USocket({ fd });
    // Close-on-exec the moment they are received, before the frame is even whole.
    this.socket.on('fds', (fds: number[]) => fds.forEach(setCloexec));
    this.socket.on('readable', () => this.drain());
    this.socket.on('error', (err: Error) => this.close(err));
    this.socket.on('end', () => this.close());
    this.socket.on('close', () => this.close());
  }

  /** Sends a frame; the promise resolves once it and its fds are written (the caller may close them then). */
  send(frame: Frame, fds: number[] = []): Promise<void> {
    if (this.closed) return Promise.reject(new Error('the channel is closed'));
    const body = Buffer.from(JSON.stringify({ ...frame, fds: fds.length }));
    const head = Buffer.alloc(4);
    head.writeUInt32LE(body.length);
    return new Promise((resolve, reject) => {
      // usocket calls back once the bytes (and fds) are written; a failed write ends the channel instead.
      const onClose = () => reject(new Error('the channel closed before the frame was written'));
      this.once('close', onClose);
      this.socket.write({
        data: Buffer.concat([head, body]),
        ...(fds.length ? { fds } : {}),
        callback: () => {
          this.off('close', onClose);
          resolve();
        },
      });
    });
  }

  private drain(): void {
    for (;;) {
      const got = this.socket.read(null, null);
      if (!got) break;
      if (got.data) this.pending = this.pending.length ? Buffer.concat([this.pending, got.data]) : got.data;
      this.fdQueue.push(...got.fds);
      if (!got.data && got.fds.length === 0) break;
    }
    while (this.pending.length >= 4) {
      const size = this.pending.readUInt32LE(0);
      if (size > maxFrameBytes) {
        this.close(new Error(`a frame of ${size} bytes is more than the channel carries`));
        return;
      }
      if (this.pending.length < 4 + size) break;
      const text = this.pending.subarray(4, 4 + size).toString('utf8');
      this.pending = this.pending.subarray(4 + size);
      let frame: Frame;
      try {
        frame = JSON.parse(text) as Frame;
      } catch {
        this.close(new Error('a frame is not JSON'));
        return;
      }
      const count = typeof frame.fds === 'number' && Number.isInteger(frame.fds) && frame.fds >= 0 ? frame.fds : -1;
      if (count < 0 || count > this.fdQueue.length) {
        this.close(new Error(`a frame announces ${String(frame.fds)} fds, ${this.fdQueue.length} arrived`));
        return;
      }
      this.emit('frame', frame, this.fdQueue.splice(0, count));
    }
  }

  close(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    for (const fd of this.fdQueue.splice(0)) {
      try {
        closeSync(fd);
      } catch {
        // already gone
      }
    }
    this.socket.destroy();
    this.emit('close', err);
  }
}
