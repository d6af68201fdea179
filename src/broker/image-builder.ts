// Building an image from manifest bytes: parse and check the manifest, point
// every external file at its object (the broker decides backing paths, from
// the digests), write the composefs EROFS image, name it by its sha256. Pure;
// `ImageBuilder` runs it in worker threads, at most two at a time.
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { writeImage } from '../composefs/writer.js';
import { InvalidRequestError, LimitExceededError, MountgateError, type Reason } from '../errors.js';
import { parseManifest } from '../manifest/load.js';
import { byteKey, showText } from '../manifest/text.js';
import type { ImageFacts } from '../policy/images.js';
import type { Manifest } from '../schema/types.generated.js';
import { objectPath } from '../store/objects.js';

export interface BuiltImage {
  imageId: string;
  image: Uint8Array;
  name?: string;
  facts: ImageFacts;
  /** Objects the image's files need, digest -> size. */
  objects: Record<string, number>;
}

/**
 * Points every external file at its object and collects what the policy
 * needs to know. A caller-supplied backing path other than the digest's is
 * refused: redirects into the store are the broker's to choose.
 */
export function prepareManifest(manifest: Manifest): { manifest: Manifest; facts: ImageFacts; objects: Record<string, number> } {
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
  return { manifest: { ...manifest, entries }, facts: { entries: entries.length, bytes, devices }, objects };
}

/** Limits checked before the expensive work, so an oversized manifest costs little. */
export interface BuildLimits {
  maxEntries: number;
}

export function buildImage(manifestBytes: Uint8Array, limits: BuildLimits): BuiltImage {
  const text = Buffer.from(manifestBytes.buffer, manifestBytes.byteOffset, manifestBytes.byteLength);
  const count = countEntries(text);
  if (count > limits.maxEntries) throw new LimitExceededError(`the image has ${count} entries; the policy allows at most ${limits.maxEntries}`);
  const prepared = prepareManifest(parseManifest(text));
  const image = writeImage(prepared.manifest);
  return {
    imageId: createHash('sha256').update(image).digest('hex'),
    image,
    ...(prepared.manifest.name ? { name: prepared.manifest.name } : {}),
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

export class ImageBuilder {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly concurrency = 2) {}

  async build(manifestBytes: Buffer, limits: BuildLimits): Promise<BuiltImage> {
    if (this.running >= this.concurrency) await new Promise<void>((res) => this.waiting.push(res));
    this.running++;
    try {
      return await this.inWorker(manifestBytes, limits);
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }

  private inWorker(manifestBytes: Buffer, limits: BuildLimits): Promise<BuiltImage> {
    return new Promise((resolve, reject) => {
      const worker = new Worker(workerUrl, { workerData: { manifestBytes, limits }, resourceLimits: { maxOldGenerationSizeMb: 8192 } });
      worker.once('message', (reply: WorkerReply) => {
        if (reply.ok) resolve(reply.built);
        else reject(reply.reason ? new MountgateError(reply.reason, reply.message) : new Error(reply.message));
        void worker.terminate();
      });
      worker.once('error', (err) => reject(new Error(`the image builder failed: ${err.message}`)));
      worker.once('exit', (code) => reject(new Error(`the image builder exited (${code}) without an answer`)));
    });
  }
}
