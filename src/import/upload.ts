// Registering an imported image: AddImage with the manifest, then PutObjects
// with the contents the broker says it lacks, taken from the archive in the
// order the archive holds them (an archive is read front to back; the broker
// names what it needs only once the manifest is registered, so the contents
// come from a second read of the archive, or from memory when the input
// cannot be read twice). Each content is spooled into a sealed memfd and
// passed as an fd, as `image add DIR` passes its files: the broker hashes
// exactly what it stores, and at most a window of them is in flight, so
// memory stays bounded whatever the size of the layer; a file too large to
// spool goes as bytes on the same socket. An image this call registered is
// removed again when the upload fails or is interrupted: nothing
// half-registered stays behind.
import { writeSync } from 'node:fs';
import type { Manifest } from '../schema/types.generated.js';
import { InvalidRequestError, NotFoundError } from '../errors.js';
import { closeFd, type MountgateBroker } from '../client/broker.js';
import { listedNames } from '../client/image-ref.js';
import { manifestFd, manifestObjects, sendObjects, type OutgoingObject, type SendWindow } from '../client/images.js';
import { memfdCreate, sealImmutable, socketpair } from '../sys/syscalls.js';
import { trace } from '../trace.js';

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
  /** The name this AddImage gave anew to an image you had under other names (what a failed import takes back). */
  newName?: string;
  uploaded: { objects: number; bytes: number };
}

/**
 * Undoes what a failed import registered: an image that was not yours before
 * goes; an image you had keeps the names it had (the one the import gave it
 * anew goes; an image you had with no name keeps it, since removing the last
 * name would remove the image).
 */
export async function takeBack(broker: Pick<MountgateBroker, 'removeImage' | 'removeImageName'>, result: Pick<ImportUploadResult, 'imageId' | 'existed' | 'newName'>): Promise<void> {
  if (!result.existed) await broker.removeImage(result.imageId).catch(() => undefined);
  else if (result.newName !== undefined) await broker.removeImageName(result.newName).catch(() => undefined);
}

/** The name `manifest` gives the image, when no image of `listing` has it and the image had other names (taking it back then leaves the image). */
function givenAnew(listing: { id: string; name?: string; names?: string[] }[], imageId: string, name: string | undefined): string | undefined {
  if (name === undefined || listing.some((i) => listedNames(i).includes(name))) return undefined;
  const image = listing.find((i) => i.id === imageId);
  return image && listedNames(image).length > 0 ? name : undefined;
}

/** What may be in flight to the broker at once: fds, and bytes of the contents held in their memfds. */
const WINDOW: SendWindow = { records: 256, bytes: 64 << 20 };
/** Larger contents are not spooled but sent as bytes, so that no single file can make memory grow past the window. */
const SPOOL_AT_MOST = 16 << 20;

/** The chunks of an object, checked against the size the archive gave it when it was first read. */
async function* exactly(o: ObjectContent, signal?: AbortSignal, onChunk?: (bytes: number) => void): AsyncGenerator<Buffer> {
  let seen = 0;
  for await (const c of o.chunks) {
    signal?.throwIfAborted();
    seen += c.length;
    if (seen > o.size) break;
    yield c;
    onChunk?.(c.length);
  }
  if (seen !== o.size) throw new InvalidRequestError(`the archive changed since it was read: a file of ${o.size} bytes (object ${o.digest}) now has ${seen > o.size ? 'more' : seen}`);
}

/** The content of one object in a new sealed memfd. */
export async function spool(o: ObjectContent, signal?: AbortSignal): Promise<number> {
  const fd = memfdCreate('mountgate-object');
  try {
    for await (const c of exactly(o, signal)) for (let at = 0; at < c.length; ) at += writeSync(fd, c, at, c.length - at);
    sealImmutable(fd);
    return fd;
  } catch (err) {
    closeFd(fd);
    throw err;
  }
}

/**
 * The groups sendObjects asks for: the provider's objects in its order, each
 * spooled into a memfd (a group as large as the window's room), or alone as
 * bytes when it is too large to spool (`onChunk` hears of each of its
 * chunks sent). `failed` keeps a failure of ours (the
 * archive's), which is the reason to give even when the broker then refuses
 * the stream we cut short.
 */
function groupsOf(provider: ObjectProvider, wanted: Map<string, number>, signal: AbortSignal | undefined, failed: { reason?: unknown }, onChunk: (bytes: number) => void): (room: SendWindow) => Promise<OutgoingObject[] | undefined> {
  const left = new Map(wanted);
  const objects = provider.objects(left)[Symbol.asyncIterator]();
  let held: ObjectContent | undefined;
  let done = false;
  const take = async (): Promise<ObjectContent | undefined> => {
    if (held) {
      const o = held;
      held = undefined;
      return o;
    }
    if (done) return undefined;
    const n = await objects.next();
    if (n.done) {
      done = true;
      if (left.size > 0) throw new NotFoundError(`the archive changed since it was read: ${left.size} object(s) the image needs are no longer in it (the first: ${[...left.keys()][0]})`);
      return undefined;
    }
    const o = n.value;
    if (left.get(o.digest) !== o.size) throw new Error(`import: object ${o.digest} was not asked for (or not with ${o.size} bytes)`);
    left.delete(o.digest);
    return o;
  };
  async function* noting(chunks: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    try {
      yield* chunks;
    } catch (err) {
      failed.reason ??= err;
      throw err;
    }
  }
  return async (room) => {
    const group: OutgoingObject[] = [];
    try {
      let bytes = 0;
      while (group.length < room.records && bytes < room.bytes) {
        signal?.throwIfAborted();
        const o = await take();
        if (!o) break;
        if (o.size > SPOOL_AT_MOST) {
          // Its chunks are read as it is sent; nothing is asked of the provider before that.
          if (group.length > 0) held = o;
          else group.push({ digest: o.digest, size: o.size, chunks: noting(exactly(o, signal, onChunk)) });
          break;
        }
        group.push({ digest: o.digest, size: o.size, fd: await spool(o, signal) });
        bytes += o.size;
      }
      return group.length > 0 ? group : undefined;
    } catch (err) {
      for (const o of group) if ('fd' in o) closeFd(o.fd);
      failed.reason ??= err;
      throw err;
    }
  };
}

/** AddImage, then PutObjects of what is missing; on any failure, what it registered is taken back (takeBack). */
export async function uploadImported(
  broker: MountgateBroker,
  manifest: Manifest,
  provider: ObjectProvider,
  opts: { onProgress?: (p: ImportUploadProgress) => void; signal?: AbortSignal } = {},
): Promise<ImportUploadResult> {
  const sizes = manifestObjects(manifest);
  const listing = await broker.listImages();
  const before = new Set(listing.map((i) => i.id));
  opts.signal?.throwIfAborted();
  const fd = manifestFd(manifest);
  let added: { imageId: string; missing: string[] };
  try {
    added = await broker.addImage(fd);
    trace('AddImage answered');
  } finally {
    closeFd(fd);
  }
  const existed = before.has(added.imageId);
  const newName = existed ? givenAnew(listing, added.imageId, manifest.name) : undefined;
  const result = { imageId: added.imageId, existed, ...(newName !== undefined ? { newName } : {}) };
  try {
    opts.signal?.throwIfAborted();
    if (added.missing.length === 0) return { ...result, uploaded: { objects: 0, bytes: 0 } };
    const wanted = new Map<string, number>();
    for (const d of added.missing) {
      const size = sizes.get(d);
      if (size === undefined) throw new InvalidRequestError(`the broker asked for object ${d}, which no file of the image has`);
      wanted.set(d, size);
    }
    const progress: ImportUploadProgress = { phase: 'upload', objects: 0, totalObjects: wanted.size, bytes: 0, totalBytes: [...wanted.values()].reduce((a, b) => a + b, 0) };
    const onProgress = opts.onProgress ?? (() => undefined);
    onProgress({ ...progress });
    const [readFd, writeFd] = socketpair();
    // The call goes first: the broker reads while we send; our read end stays open until its answer.
    const put = broker.putObjects(readFd).finally(() => closeFd(readFd));
    put.catch(() => undefined);
    const ours: { reason?: unknown } = {};
    // Bytes count as sent with their group (an fd's) or chunk by chunk (an object sent as bytes).
    const onChunk = (bytes: number) => {
      progress.bytes += bytes;
      onProgress({ ...progress });
    };
    const onSent = (group: OutgoingObject[]) => {
      for (const o of group) {
        progress.objects++;
        if ('fd' in o) progress.bytes += o.size;
      }
      onProgress({ ...progress });
    };
    const sent = sendObjects(writeFd, groupsOf(provider, wanted, opts.signal, ours, onChunk), onSent, put, WINDOW);
    const [w, p] = await Promise.allSettled([sent, put]);
    // A failure of the archive's cuts the stream short, and the broker then refuses it: ours is the reason to give.
    if (ours.reason !== undefined) throw ours.reason;
    if (p.status === 'rejected') throw p.reason;
    if (w.status === 'rejected') throw w.reason;
    return { ...result, uploaded: p.value };
  } catch (err) {
    await takeBack(broker, result);
    throw err;
  }
}
