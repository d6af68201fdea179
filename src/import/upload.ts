// Registering an imported image: AddImage with the manifest, then PutObjects
// with the contents the broker says it lacks, taken from the archive in the
// order the archive holds them (an archive is read front to back; the broker
// names what it needs only once the manifest is registered, so the contents
// come from a second read of the archive, or from memory when the input
// cannot be read twice). An image this call registered is removed again when
// the upload fails or is interrupted: nothing half-registered stays behind.
import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import type { Manifest } from '../schema/types.generated.js';
import { InvalidRequestError, NotFoundError } from '../errors.js';
import { closeFd, type MountgateBroker } from '../client/broker.js';
import { manifestObjects, recordHeader } from '../client/images.js';
import { pipe, sealedMemfd } from '../sys/syscalls.js';

export interface ObjectContent {
  digest: string;
  size: number;
  chunks: AsyncIterable<Buffer>;
}

/** Where an import's file contents come from once the broker has said which it needs. */
export interface ObjectProvider {
  /** Yields the content of every wanted object once (consume each one's chunks before asking for the next). */
  objects(wanted: Map<string, number>): AsyncIterable<ObjectContent>;
}

export interface ImportUploadProgress {
  phase: 'upload';
  objects: number;
  totalObjects: number;
  bytes: number;
  totalBytes: number;
}

export interface ImportUploadResult {
  imageId: string;
  /** Whether the broker had this image for you already. */
  existed: boolean;
  uploaded: { objects: number; bytes: number };
}

async function writeRecords(fd: number, provider: ObjectProvider, wanted: Map<string, number>, progress: ImportUploadProgress, onProgress: (p: ImportUploadProgress) => void, signal?: AbortSignal): Promise<void> {
  const out = createWriteStream('', { fd, autoClose: true, highWaterMark: 1 << 20 });
  const failed = new Promise<never>((_, reject) => out.once('error', reject));
  failed.catch(() => undefined);
  const write = async (b: Buffer) => {
    if (!out.write(b)) await Promise.race([once(out, 'drain'), failed]);
  };
  const left = new Map(wanted);
  try {
    for await (const o of provider.objects(left)) {
      if (left.get(o.digest) !== o.size) throw new Error(`import: object ${o.digest} was not asked for (or not with ${o.size} bytes)`);
      left.delete(o.digest);
      await write(recordHeader(o.digest, o.size));
      let sent = 0;
      for await (const c of o.chunks) {
        signal?.throwIfAborted();
        sent += c.length;
        if (sent > o.size) break;
        await write(c);
        progress.bytes += c.length;
        onProgress({ ...progress });
      }
      if (sent !== o.size) throw new InvalidRequestError(`the archive changed since it was read: a file of ${o.size} bytes (object ${o.digest}) now has ${sent > o.size ? 'more' : sent}`);
      progress.objects++;
      onProgress({ ...progress });
    }
    if (left.size > 0) throw new NotFoundError(`the archive changed since it was read: ${left.size} object(s) the image needs are no longer in it (the first: ${[...left.keys()][0]})`);
    out.end();
    await Promise.race([once(out, 'close'), failed]);
  } catch (err) {
    out.destroy();
    throw err;
  }
}

/** AddImage, then PutObjects of what is missing; on any failure, an image that was not yours before is removed again. */
export async function uploadImported(
  broker: MountgateBroker,
  manifest: Manifest,
  provider: ObjectProvider,
  opts: { onProgress?: (p: ImportUploadProgress) => void; signal?: AbortSignal } = {},
): Promise<ImportUploadResult> {
  const sizes = manifestObjects(manifest);
  const before = new Set((await broker.listImages()).map((i) => i.id));
  opts.signal?.throwIfAborted();
  const fd = sealedMemfd('mountgate-manifest', Buffer.from(JSON.stringify(manifest)));
  let added: { imageId: string; missing: string[] };
  try {
    added = await broker.addImage(fd);
  } finally {
    closeFd(fd);
  }
  const existed = before.has(added.imageId);
  try {
    opts.signal?.throwIfAborted();
    if (added.missing.length === 0) return { imageId: added.imageId, existed, uploaded: { objects: 0, bytes: 0 } };
    const wanted = new Map<string, number>();
    for (const d of added.missing) {
      const size = sizes.get(d);
      if (size === undefined) throw new InvalidRequestError(`the broker asked for object ${d}, which no file of the image has`);
      wanted.set(d, size);
    }
    const progress: ImportUploadProgress = { phase: 'upload', objects: 0, totalObjects: wanted.size, bytes: 0, totalBytes: [...wanted.values()].reduce((a, b) => a + b, 0) };
    const onProgress = opts.onProgress ?? (() => undefined);
    onProgress({ ...progress });
    const [readFd, writeFd] = pipe();
    // The call goes first: the broker reads while we write; our read end stays open until its answer.
    const put = broker.putObjects(readFd).finally(() => closeFd(readFd));
    put.catch(() => undefined);
    const [w, p] = await Promise.allSettled([writeRecords(writeFd, provider, wanted, progress, onProgress, opts.signal), put]);
    // A broker that refuses ends the stream early (our writes then fail with EPIPE): its reason is the one to give.
    if (w.status === 'rejected' && (w.reason as NodeJS.ErrnoException).code !== 'EPIPE') throw w.reason;
    if (p.status === 'rejected') throw p.reason;
    if (w.status === 'rejected') throw w.reason;
    return { imageId: added.imageId, existed, uploaded: p.value };
  } catch (err) {
    if (!existed) await broker.removeImage(added.imageId).catch(() => undefined);
    throw err;
  }
}
