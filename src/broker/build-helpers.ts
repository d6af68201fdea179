// Build helpers: the processes that build images (build-helper.ts), started
// when a build needs one and none is idle, kept for the next build, let go
// when idle (idle-pool.ts) or right after a big build (whose heap would
// otherwise stay resident), so that a broker at rest holds none and a big
// AddImage leaves nothing behind. A helper's heap is capped (node-flags.ts):
// an image past it ends the helper's build with LimitExceeded, not the
// broker. The caller (ImageService) bounds how many builds run at once.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, fstatSync } from 'node:fs';
import { LimitExceededError, MountgateError, type Reason } from '../errors.js';
import { socketpair } from '../sys/syscalls.js';
import { Channel, type Frame } from './channel.js';
import { IdlePool, type PooledHelper } from './idle-pool.js';
import { readManifestFd, type BuildLimits, type BuiltImage } from './image-builder.js';
import { brokerEnv, buildHeapMb, nodeFlags, belowFront } from './node-flags.js';

const helperPath = new URL('./build-helper.js', import.meta.url).pathname;

/** A manifest at least this big leaves its helper with a big heap: that helper is let go after the build. */
const bigManifestBytes = 16 * 2 ** 20;

/** Largest build result the front reads (the facts of an image at the policy's largest are far smaller). */
const maxResultBytes = 2 ** 31;

/** What V8 prints when a process reaches its heap cap, just before it aborts. */
const outOfHeap = /heap out of memory|Reached heap limit/;

class BuildHelper implements PooledHelper {
  private readonly child: ChildProcess;
  private readonly channel: Channel;
  /** The end of the helper's stderr (forwarded as it comes): an abort at the heap cap says so there. */
  private stderrTail = '';
  private exited = false;

  constructor() {
    const [ours, theirs] = socketpair();
    try {
      this.child = spawn(process.execPath, [...nodeFlags.build, helperPath], { stdio: ['ignore', 'ignore', 'pipe', theirs], env: { ...brokerEnv } });
      belowFront(this.child);
    } catch (err) {
      closeSync(ours);
      throw err;
    } finally {
      closeSync(theirs);
    }
    this.channel = new Channel(ours);
    this.channel.on('error', () => undefined);
    this.child.stderr!.on('data', (chunk: Buffer) => {
      process.stderr.write(chunk);
      this.stderrTail = (this.stderrTail + chunk.toString('utf8')).slice(-4096);
    });
    this.child.once('error', () => this.kill());
    this.child.once('exit', () => {
      this.exited = true;
      setImmediate(() => this.channel.close());
    });
  }

  get alive(): boolean {
    return !this.exited && this.child.exitCode === null && this.child.signalCode === null;
  }

  kill(): void {
    this.exited = true;
    this.child.kill('SIGKILL');
    // Never from inside the channel's own read callback (a reply's promise settles there): libuv would close a handle it is reading.
    setImmediate(() => this.channel.close());
  }

  /** Builds the image of the manifest in the sealed memfd `fd` (which stays the caller's). */
  build(fd: number, limits: BuildLimits): Promise<BuiltImage> {
    return new Promise<BuiltImage>((resolve, reject) => {
      const done = () => {
        this.channel.off('frame', onFrame);
        this.child.off('exit', onExit);
      };
      const onFrame = (frame: Frame, fds: number[]) => {
        done();
        try {
          if (frame.type !== 'built') throw new Error(`the image builder sent ${String(frame.type)}`);
          if (frame.ok !== true) {
            const message = String(frame.message);
            throw typeof frame.reason === 'string' ? new MountgateError(frame.reason as Reason, message) : new Error(message);
          }
          if (fds.length !== 2) throw new Error(`the image builder sent ${fds.length} fds, not 2`);
          const facts = JSON.parse(readManifestFd(fds[0]!, maxResultBytes).toString('utf8')) as Omit<BuiltImage, 'image'>;
          resolve({ ...facts, image: readManifestFd(fds[1]!, maxResultBytes) });
        } catch (err) {
          reject(err);
        } finally {
          for (const f of fds) closeSync(f);
        }
      };
      const onExit = (code: number | null, signal: string | null) => {
        done();
        reject(outOfHeap.test(this.stderrTail)
          ? new LimitExceededError(`building this image needs more than the ${buildHeapMb} MiB one build may use; split it into smaller images`)
          : new Error(`the image builder exited (${signal ?? code}) without an answer`));
      };
      if (!this.alive) return onExit(this.child.exitCode, this.child.signalCode);
      this.channel.on('frame', onFrame);
      this.child.once('exit', onExit);
      this.channel.send({ type: 'build', limits }, [fd]).catch(() => undefined);
    });
  }
}

export class BuildHelpers {
  private readonly pool = new IdlePool(() => new BuildHelper());

  /** Builds the manifest in the sealed memfd `fd` in a helper process: the manifest bytes never sit in the front. */
  async build(fd: number, limits: BuildLimits): Promise<BuiltImage> {
    const helper = this.pool.take();
    try {
      return await helper.build(fd, limits);
    } finally {
      // A big build's heap goes with its helper; a failed helper is dropped.
      if (fstatSync(fd).size >= bigManifestBytes) helper.kill();
      this.pool.give(helper);
    }
  }

  /** Lets the idle helpers go. */
  close(): void {
    this.pool.close();
  }
}
