// Building an image from manifest bytes: parse and check the manifest, point
// every external file at its object (the broker decides backing paths, from
// the digests), write the composefs EROFS image, name it by its sha256. Pure;
// `ImageBuilder` runs it in a worker thread per build (ImageService queues them).
import { createHash } from 'node:crypto';
import { fstatSync, readSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { writeCheckedImage } from '../composefs/writer.js';
import { InvalidRequestError, LimitExceededError, MountgateError, type Reason } from '../errors.js';
import { parseManifest, type CheckedManifest } from '../manifest/load.js';
import { byteKey, showText } from '../manifest/text.js';
import type { ImageFacts } from '../policy/images.js';
import { objectPath } from '../store/objects.js';

export interface BuiltImage {
  imageId: string;
  image: Uint8Array;
  name?: string;
  /** The caller's image this one is kept for, hidden (the manifest's keptFor). */
  keptFor?: string;
  facts: ImageFacts;
  /** Objects the image's files need, digest -> size. */
  objects: Record<string, number>;
}

/**
 * Points every external file at its object and collects what the policy
 * needs to know. A caller-supplied backing path other than the digest's is
 * refused: redirects into the store are the broker's to choose.
 */
export function prepareManifest(manifest: CheckedManifest): { manifest: CheckedManifest; facts: ImageFacts; objects: Record<string, number> } {
  const objects: Record<string, number> = {};
  const devices: string[] = [];
  let bytes = 0;
  const entries = manifest.entries.map((e, k) => {
    if (e.type === 'chardev' || e.type === 'blockdev') devices.push(showText(e.path));
    if (e.type !== 'file') return e;
    bytes += e.size;
    if (e.size === 0 || e.inline !== undefined) return e;
    if (!e.digest) throw new InvalidRequestError(`/entries/${k}: ${showText(e.path)} has ${e.size} bytes but neither a digest nor inline content`);
    const backing = objectPath(e.digest);
    if (e.backing !== undefined && byteKey(e.backing) !== backing) {
      throw new InvalidRequestError(`/entries/${k}: ${showText(e.path)} names backing "${showText(e.backing)}", but objects are stored by digest ("${backing}"): omit backing`);
    }
    const known = objects[e.digest];
    if (known !== undefined && known !== e.size) throw new InvalidRequestError(`/entries/${k}: digest ${e.digest} appears with sizes ${known} and ${e.size}`);
    objects[e.digest] = e.size;
    return { ...e, backing };
  });
  // Still checked: only backing paths changed, each to its object's path (short ASCII, what the check allows).
  return { manifest: { ...manifest, entries } as CheckedManifest, facts: { entries: entries.length, bytes, devices }, objects };
}

/** Limits checked before the expensive work, so an oversized manifest costs little. */
export interface BuildLimits {
  maxEntries: number;
  /** Largest manifest read, in bytes (checked again from the fd's size before reading). */
  maxBytes: number;
}

/**
 * The manifest bytes from a sealed memfd (checked by the caller of the
 * worker), read by position: the fd's offset is shared with the caller's.
 */
export function readManifestFd(fd: number, maxBytes: number): Buffer {
  const size = fstatSync(fd).size;
  if (size > maxBytes) throw new LimitExceededError(`the manifest is ${size} bytes; the policy allows at most ${maxBytes}`);
  const buf = Buffer.allocUnsafe(size);
  let at = 0;
  while (at < size) {
    const n = readSync(fd, buf, at, size - at, at);
    if (n === 0) break;
    at += n;
  }
  return buf.subarray(0, at);
}

export function buildImage(manifestBytes: Uint8Array, limits: BuildLimits): BuiltImage {
  const text = Buffer.from(manifestBytes.buffer, manifestBytes.byteOffset, manifestBytes.byteLength);
  const count = countEntries(text);
  if (count > limits.maxEntries) throw new LimitExceededError(`the image has ${count} entries; the policy allows at most ${limits.maxEntries}`);
  const prepared = prepareManifest(parseManifest(text));
  const image = writeCheckedImage(prepared.manifest);
  return {
    imageId: createHash('sha256').update(image).digest('hex'),
    image,
    ...(prepared.manifest.name ? { name: prepared.manifest.name } : {}),
    ...(prepared.manifest.keptFor ? { keptFor: prepared.manifest.keptFor } : {}),
    facts: prepared.facts,
    objects: prepared.objects,
  };
}

/** Entries in a manifest, from a shallow parse (undefined shapes are left to the full check). */
function countEntries(text: Buffer): number {
  try {
    const doc = JSON.parse(text.toString('utf8')) as { entries?: unknown };
    return Array.isArray(doc.entries) ? doc.entries.length : 0;
  } catch {
    return 0; // not JSON: parseManifest reports it
  }
}

type WorkerReply = { ok: true; built: BuiltImage } | { ok: false; reason?: Reason; message: string };

const workerUrl = new URL('./build-worker.js', import.meta.url);

/** Heap of one build worker: a manifest at the policy's largest size and its image fit; more ends the build, not the broker. */
const workerHeapMb = 2048;

/** A manifest at least this big leaves its worker with a big heap: that worker is replaced after the build. */
const bigManifestBytes = 16 * 2 ** 20;

/**
 * A fixed number of build workers, started at once and kept between builds
 * (starting one costs tens of milliseconds of CPU). A worker that ran out of
 * heap, failed, or built a big manifest is replaced by a fresh one, so memory
 * and fds return to where they were. The caller (ImageService) bounds how
 * many builds run at once to the pool's size.
 */
export class ImageBuilder {
  private readonly idle: Worker[] = [];
  /** Resolves once the first workers run (the broker says it is ready only then, so its resources do not grow later). */
  readonly ready: Promise<void>;

  constructor(size: number) {
    for (let k = 0; k < size; k++) this.idle.push(this.spawn());
    this.ready = Promise.all(this.idle.map((w) => new Promise<void>((res) => w.once('online', () => res())))).then(() => undefined);
  }

  private spawn(): Worker {
    return new Worker(workerUrl, { resourceLimits: { maxOldGenerationSizeMb: workerHeapMb } });
  }

  private retire(worker: Worker): void {
    void worker.terminate();
    this.idle.push(this.spawn());
  }

  /**
   * Builds the image of the manifest in the sealed memfd `fd` in a worker
   * thread, which reads the fd itself (threads share the fd table): the
   * manifest bytes never sit on the broker's main heap.
   */
  build(fd: number, limits: BuildLimits): Promise<BuiltImage> {
    const worker = this.idle.pop() ?? this.spawn();
    const big = fstatSync(fd).size >= bigManifestBytes;
    return new Promise<BuiltImage>((resolve, reject) => {
      const done = () => {
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
      };
      const onMessage = (reply: WorkerReply) => {
        done();
        if (big) this.retire(worker);
        else this.idle.push(worker);
        if (reply.ok) resolve(reply.built);
        else reject(reply.reason ? new MountgateError(reply.reason, reply.message) : new Error(reply.message));
      };
      const onError = (err: Error) => {
        done();
        this.retire(worker);
        if ((err as { code?: string }).code === 'ERR_WORKER_OUT_OF_MEMORY') {
          reject(new LimitExceededError(`building this image needs more than the ${workerHeapMb} MiB one build may use; split it into smaller images`));
        } else {
          reject(new Error(`the image builder failed: ${err.message}`));
        }
      };
      const onExit = (code: number) => {
        done();
        this.idle.push(this.spawn());
        reject(new Error(`the image builder exited (${code}) without an answer`));
      };
      worker.on('message', onMessage);
      worker.once('error', onError);
      worker.once('exit', onExit);
      worker.postMessage({ fd, limits });
    });
  }
}
