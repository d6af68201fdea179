// Build helpers: the processes that build images (build-helper.ts), started
// when a build needs one and none is idle, kept for the next build, let go
// when idle (idle-pool.ts) or right after a big build (whose heap would
// otherwise stay resident), so that a broker at rest holds none and a big
// AddImage leaves nothing behind. A helper's heap is capped (node-flags.ts):
// an image past it ends the helper's build with LimitExceeded, not the
// broker. The caller (ImageService) bounds how many builds run at once.
//
// A build's result is read on libuv's pool and checked a slice per turn
// (readResult): the front serves every user, and reading the facts of
// 100k objects and tens of MiB of image in one turn held everyone's calls
// for 0.1-0.4 s. A helper's answer is checked as a stranger's would be:
// it parses what callers send, so a bug there must not reach the store.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, fstatSync, read } from 'node:fs';
import { promisify } from 'node:util';
import { LimitExceededError, MountgateError, type Reason } from '../errors.js';
import { shownDevices } from '../policy/images.js';
import { ObjectList } from '../store/object-list.js';
import { digestPattern } from '../store/objects.js';
import { fileSeals, IMMUTABLE_SEALS, socketpair } from '../sys/syscalls.js';
import { Channel, type Frame } from './channel.js';
import { IdlePool, type PooledHelper } from './idle-pool.js';
import type { BuildLimits, BuildResult, BuiltImage } from './image-builder.js';
import { brokerEnv, buildHeapMb, nodeFlags, belowFront } from './node-flags.js';

const readAt = promisify(read);

const helperPath = new URL('./build-helper.js', import.meta.url).pathname;

/** A manifest at least this big leaves its helper with a big heap: that helper is let go after the build. */
const bigManifestBytes = 16 * 2 ** 20;

/** Largest image or object list the front reads from a build (an image at the policy's largest is far smaller). */
const maxResultBytes = 2 ** 31;

/** Largest facts text the front reads from a build: a name, a few device paths and counts. */
const maxFactsBytes = 2 ** 20;

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
        readResult(frame, fds)
          .finally(() => fds.forEach((f) => closeSync(f)))
          .then(resolve, reject);
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

/**
 * A helper's answer to a build: its refusal, or the image it built from the
 * three memfds it sent (the facts, the object records, the image), each
 * read off the event loop and checked.
 */
export async function readResult(frame: Frame, fds: number[]): Promise<BuiltImage> {
  if (frame.type !== 'built') throw new Error(`the image builder sent ${String(frame.type)}`);
  if (frame.ok !== true) {
    const message = String(frame.message);
    throw typeof frame.reason === 'string' ? new MountgateError(frame.reason as Reason, message) : new Error(message);
  }
  if (fds.length !== 3) throw new Error(`the image builder sent ${fds.length} fds, not 3`);
  const facts = checkResult(JSON.parse((await readSealed(fds[0]!, maxFactsBytes, 'facts text')).toString('utf8')));
  const [records, image] = await Promise.all([readSealed(fds[1]!, maxResultBytes, 'object list'), readSealed(fds[2]!, maxResultBytes, 'image file')]);
  return { ...facts, objects: await ObjectList.check(records, facts.objects), image };
}

/**
 * The bytes of a memfd a build helper sent, read by position (its offset is
 * shared with the helper's copy) on libuv's pool. Only a sealed memfd is
 * read: nothing else could make a read wait or change under it.
 */
async function readSealed(fd: number, maxBytes: number, what: string): Promise<Buffer> {
  const seals = fileSeals(fd);
  if (seals === undefined || (seals & IMMUTABLE_SEALS) !== IMMUTABLE_SEALS) throw new Error(`the image builder sent its ${what} in something other than a sealed memfd`);
  const size = fstatSync(fd).size;
  if (size > maxBytes) throw new LimitExceededError(`the build's ${what} has ${size} bytes, more than the ${maxBytes} the broker reads; split the image into smaller ones`);
  const buf = Buffer.allocUnsafe(size);
  let at = 0;
  while (at < size) {
    const { bytesRead } = await readAt(fd, buf, at, size - at, at);
    if (bytesRead === 0) break;
    at += bytesRead;
  }
  return buf.subarray(0, at);
}

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/** The facts of a build, if they have the shape a helper's have; an image id or name goes into paths and the database. */
function checkResult(v: unknown): BuildResult {
  const r = v as BuildResult;
  const bad = (what: string) => new Error(`the image builder sent facts with ${what}`);
  if (typeof r !== 'object' || r === null) throw bad('no object');
  if (typeof r.imageId !== 'string' || !digestPattern.test(r.imageId)) throw bad('an image id that is no sha256');
  if (r.name !== undefined && typeof r.name !== 'string') throw bad('a name that is no string');
  if (r.keptFor !== undefined && (typeof r.keptFor !== 'string' || !digestPattern.test(r.keptFor))) throw bad('a keptFor that is no image id');
  const f = r.facts;
  if (typeof f !== 'object' || f === null || !isCount(f.entries) || !isCount(f.bytes)) throw bad('no entry and byte counts');
  if (!Array.isArray(f.devices) || f.devices.length > shownDevices || !f.devices.every((d) => typeof d === 'string')) throw bad(`more than ${shownDevices} device paths, or not paths`);
  if (f.deviceCount !== undefined && (!isCount(f.deviceCount) || f.deviceCount < f.devices.length)) throw bad('a device count short of its paths');
  if (!isCount(r.objects) || r.objects > f.entries) throw bad('an object count that is no count or more than its entries');
  return r;
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

  /** Has a helper ready for a build expected soon (the AddImage a ProveObjects call is for): see IdlePool.warm. */
  warm(): void {
    this.pool.warm();
  }

  /** Lets the idle helpers go. */
  close(): void {
    this.pool.close();
  }
}
