// The client side of composefs images: turning a real directory tree into a
// manifest (with the fs-verity digest of every file), finding object content
// for a manifest that came from a file, and uploading an image to the broker
// (AddImage, then PutObjects for exactly the objects it says are missing).
// Regular files are never inlined (every non-empty file becomes an object);
// every extended attribute this process can list is recorded (trusted.* only
// when it has CAP_SYS_ADMIN, as the kernel lists them).
import { closeSync, constants as fsConstants, createReadStream, createWriteStream, existsSync, fstatSync, lstatSync, openSync, readdirSync, readlinkSync, readSync, statSync, type BigIntStats } from 'node:fs';
import { EventEmitter, once } from 'node:events';
import { createRequire } from 'node:module';
import { basename, join, resolve } from 'node:path';
import type { Entry, IdRange, Manifest } from '../schema/types.generated.js';
import { objectPath } from '../composefs/format.js';
import { validateManifest } from '../manifest/load.js';
import { manifestJson } from '../manifest/format.js';
import { byteText, showText, utf8Text } from '../manifest/text.js';
import { FsVerityHasher } from '../verity/fsverity.js';
import { getXattr, listXattrs, pipe, sealedMemfd, socketpair, SyscallError } from '../sys/syscalls.js';
import { InvalidRequestError, NotFoundError } from '../errors.js';
import { closeFd, type MountgateBroker } from './broker.js';
import { cachedStat, type DigestCache } from './digest-cache.js';
import { trace } from '../trace.js';
import type { Prover } from './prover.js';

/** The backing path of an object in a composefs object directory. */
export { objectPath };

/** Owner id recorded for files whose host owner the id map does not cover (as a user namespace shows them). */
export const OVERFLOW_ID = 65534;
/** Bytes before each object's content in the PutObjects stream: 32 digest + 8 size. */
export const RECORD_HEADER_BYTES = 40;

export interface FromDirectoryOptions {
  /** The manifest's name; default the directory's base name. */
  name?: string;
  /**
   * How host owners become image owners: ranges of {from: image id, to: host
   * id, count}, e.g. the rootless layout (your uid as 0, your subuids as
   * 1..). Ids outside the map are recorded as 65534. Default: ids as on disk.
   */
  uidMap?: IdRange[];
  gidMap?: IdRange[];
  /** After every entry and every MiB hashed: entries so far and bytes of file contents hashed (for progress). */
  onProgress?: (entries: number, bytes: number) => void;
  /** Digests of files unchanged since an earlier import (see digest-cache.ts): such a file is not read. */
  digestCache?: DigestCache;
  /**
   * Has the broker hash the files (ProveObjects, see proveWith) instead of
   * hashing them here: every file whose digest is not cached is queued on it
   * as the walk meets it, so the broker hashes while the walk goes on; the
   * digests come at the end. A walk that fails aborts it (the broker holds
   * nothing of the call).
   */
  prover?: Prover;
}

export interface DirectoryManifest {
  manifest: Manifest;
  /** Content digest (hex) -> absolute path of a file that holds it (bytes when the path is not UTF-8). */
  sources: Map<string, string | Buffer>;
}

function imageId(map: IdRange[] | undefined, hostId: number): number {
  if (!map) return hostId;
  for (const r of map) if (hostId >= r.to && hostId < r.to + r.count) return r.from + (hostId - r.to);
  return OVERFLOW_ID;
}

/** The kernel's encoding of a device number (new_encode_dev), from glibc's dev_t. */
function kernelDev(dev: bigint): number {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return Number((minor & 0xffn) | (major << 8n) | ((minor & ~0xffn) << 12n)) >>> 0;
}

/**
 * The extended attributes of a file itself (not a symlink's target), sorted by
 * name bytes; a value that cannot be read is an error naming the file, never
 * a silent drop.
 */
export function fileXattrs(path: string | Buffer, shown: string): { key: string | { base64: string }; value: string }[] {
  const names = listXattrs(path).sort(Buffer.compare);
  return names.map((name) => {
    let value: Buffer;
    try {
      value = getXattr(path, name);
    } catch (err) {
      const why = err instanceof SyscallError ? err.code : (err as Error).message;
      throw new InvalidRequestError(`cannot read the extended attribute ${showText(name)} of ${shown} (${why}); the image would lack it`);
    }
    return { key: byteText(name), value: value.toString('base64') };
  });
}

const readBuffer = Buffer.allocUnsafe(1 << 20);
const fileHasher = new FsVerityHasher();

/**
 * The fs-verity digest (hex) and size of a file, read to its end in 1 MiB
 * pieces into one buffer (no stream per file: a tree has many small ones);
 * `onBytes` hears the bytes of each piece hashed.
 */
export function fileDigest(path: string | Buffer, onBytes?: (bytes: number) => void): { digest: string; size: number } {
  const fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  try {
    fileHasher.reset();
    let size = 0;
    for (let n; (n = readSync(fd, readBuffer, 0, readBuffer.length, null)) > 0; size += n) {
      fileHasher.update(readBuffer.subarray(0, n));
      onBytes?.(n);
    }
    return { digest: fileHasher.digest().toString('hex'), size };
  } finally {
    closeSync(fd);
  }
}


/**
 * Builds the manifest of a directory tree, without following symlinks:
 * entries in manifest order (a directory, then its contents, siblings in byte
 * order of their names), a second name of an inode as a hardlink entry
 * pointing to the first, and the fs-verity digest of every non-empty file.
 * Names and symlink targets are taken as the bytes they are on disk: text
 * when they are UTF-8, {"base64"} otherwise.
 */
export async function manifestFromDirectory(dir: string, opts: FromDirectoryOptions = {}): Promise<DirectoryManifest> {
  const root = resolve(dir);
  const rootStat = statSync(root, { bigint: true });
  if (!rootStat.isDirectory()) throw new InvalidRequestError(`${dir} is not a directory`);
  const entries: Entry[] = [];
  const sources = new Map<string, string | Buffer>();
  const firstPathOfInode = new Map<string, Buffer>();
  /** A host path for fs calls and messages: a string when it is UTF-8. */
  const hostName = (p: Buffer): string | Buffer => utf8Text(p) ?? p;
  const SLASH = Buffer.from('/');
  let hashed = 0;
  const onBytes = opts.onProgress && ((n: number) => opts.onProgress!(entries.length, (hashed += n)));
  /** Files the broker hashes (opts.prover): their entries and records, completed once it answers. */
  const toProve: { entry: Extract<Entry, { type: 'file' }>; path: string | Buffer; record: number; st: BigIntStats }[] = [];
  const prover = opts.prover;
  if (prover) prover.onPassed = (n) => onBytes?.(n);

  const common = (st: BigIntStats) => ({
    mode: Number(st.mode & 0o7777n),
    uid: imageId(opts.uidMap, Number(st.uid)),
    gid: imageId(opts.gidMap, Number(st.gid)),
    mtime: { sec: Number(st.mtimeNs / 1_000_000_000n), nsec: Number(st.mtimeNs % 1_000_000_000n) },
  });

  async function visit(hostBytes: Buffer, pathBytes: Buffer, st: BigIntStats): Promise<void> {
    await visitEntry(hostBytes, pathBytes, st);
    opts.onProgress?.(entries.length, hashed);
  }

  async function visitEntry(hostBytes: Buffer, pathBytes: Buffer, st: BigIntStats): Promise<void> {
    const hostPath = hostName(hostBytes);
    const shown = showText(hostBytes);
    const path = byteText(pathBytes);
    if (st.mtimeNs < 0n) throw new InvalidRequestError(`${shown} has a modification time before 1970, which a manifest cannot hold`);
    if (!st.isDirectory() && st.nlink > 1n) {
      const key = `${st.dev}:${st.ino}`;
      const first = firstPathOfInode.get(key);
      if (first !== undefined) {
        entries.push({ path, type: 'hardlink', target: byteText(first) });
        return;
      }
      firstPathOfInode.set(key, pathBytes);
    }
    const xattrs = fileXattrs(hostPath, shown);
    const base = { path, ...common(st), ...(xattrs.length ? { xattrs } : {}) };
    if (st.isDirectory()) {
      entries.push({ ...base, type: 'dir' });
      const names = readdirSync(hostPath, { encoding: 'buffer' });
      names.sort(Buffer.compare);
      for (const name of names) {
        const child = Buffer.concat([hostBytes, SLASH, name]);
        const childPath = pathBytes.length === 1 ? Buffer.concat([SLASH, name]) : Buffer.concat([pathBytes, SLASH, name]);
        await visit(child, childPath, lstatSync(hostName(child), { bigint: true }));
      }
    } else if (st.isFile()) {
      if (st.size === 0n) {
        entries.push({ ...base, type: 'file', size: 0 });
        return;
      }
      const cache = opts.digestCache;
      let digest = cache?.get(cachedStat(st));
      const size = Number(st.size);
      if (digest === undefined && prover) {
        const entry = { ...base, type: 'file' as const, size, digest: '', backing: '' };
        entries.push(entry);
        toProve.push({ entry, path: hostPath, record: await prover.addFile(hostPath, size), st });
        return;
      }
      if (digest === undefined) {
        const read = fileDigest(hostPath, onBytes);
        if (BigInt(read.size) !== st.size) throw new InvalidRequestError(`${shown} changed while it was read (${st.size} bytes, then ${read.size})`);
        digest = read.digest;
        // Recorded with the stat from before the read: a write during it leaves a record that no longer matches.
        cache?.set(cachedStat(st), digest);
      } else {
        onBytes?.(size);
      }
      entries.push({ ...base, type: 'file', size, digest, backing: objectPath(digest) });
      if (!sources.has(digest)) sources.set(digest, hostPath);
    } else if (st.isSymbolicLink()) {
      entries.push({ ...base, type: 'symlink', target: byteText(readlinkSync(hostPath, { encoding: 'buffer' })) });
    } else if (st.isFIFO()) {
      entries.push({ ...base, type: 'fifo' });
    } else if (st.isSocket()) {
      entries.push({ ...base, type: 'socket' });
    } else if (st.isCharacterDevice()) {
      const rdev = kernelDev(st.rdev);
      entries.push(rdev === 0 ? { ...base, type: 'whiteout' } : { ...base, type: 'chardev', rdev });
    } else if (st.isBlockDevice()) {
      entries.push({ ...base, type: 'blockdev', rdev: kernelDev(st.rdev) });
    } else {
      throw new InvalidRequestError(`${shown} is of a kind of file a manifest cannot hold`);
    }
  }

  try {
    await visit(Buffer.from(root), SLASH, rootStat);
  } catch (err) {
    await prover?.abort();
    throw err;
  }
  trace(`walked (${entries.length} entries, ${toProve.length} files proven)`);
  if (prover) {
    const digests = await prover.finish();
    // One digest per record (finish checks the count), each file's at its record's place.
    trace('ProveObjects answered');
    for (const { entry, path, record, st } of toProve) {
      const digest = digests[record]!;
      entry.digest = digest;
      entry.backing = objectPath(digest);
      // The broker hashed what it read after this stat: a write since changed ctime, and the record no longer matches.
      opts.digestCache?.set(cachedStat(st), digest);
      if (!sources.has(digest)) sources.set(digest, path);
    }
  }
  const manifest = validateManifest({ version: 1, name: opts.name ?? (basename(root) || 'root'), entries });
  return { manifest, sources };
}

/**
 * Entries and bytes of file contents (a hardlinked file once) of a tree, by a
 * walk that reads only directories and the sizes of regular files (about
 * 10 µs an entry with warm caches, a few per cent of hashing the contents of
 * a typical root filesystem): the total a progress estimate needs. Gives up,
 * undefined, once it has taken `budgetMs`: a tree that big gets no estimate
 * rather than a walk that costs more than it tells.
 */
export function directorySize(dir: string, budgetMs: number): { entries: number; bytes: number } | undefined {
  try {
    return walkSizes(dir, budgetMs);
  } catch {
    // What cannot be read is the real walk's to report, by name.
    return undefined;
  }
}

function walkSizes(dir: string, budgetMs: number): { entries: number; bytes: number } | undefined {
  const deadline = performance.now() + budgetMs;
  const seen = new Set<string>();
  const stack = [Buffer.from(resolve(dir))];
  let entries = 1;
  let bytes = 0;
  for (let d = stack.pop(); d; d = stack.pop()) {
    if (performance.now() > deadline) return undefined;
    for (const child of readdirSync(d, { withFileTypes: true, encoding: 'buffer' })) {
      entries++;
      const p = Buffer.concat([d, Buffer.from('/'), child.name]);
      if (child.isDirectory()) stack.push(p);
      if (!child.isFile()) continue;
      const st = lstatSync(p);
      if (st.nlink > 1) {
        const key = `${st.dev}:${st.ino}`;
        if (seen.has(key)) continue;
        seen.add(key);
      }
      bytes += st.size;
    }
  }
  return { entries, bytes };
}

/** Digest -> size of every object a manifest's files need. */
export function manifestObjects(manifest: Manifest): Map<string, number> {
  const out = new Map<string, number>();
  for (const e of manifest.entries) if (e.type === 'file' && e.digest !== undefined && e.inline === undefined && e.size > 0) out.set(e.digest, e.size);
  return out;
}

/**
 * Finds object content in a composefs-style object directory (DIR/xx/rest,
 * as `mkcomposefs --digest-store` writes): digest -> path, for those present.
 */
export function findObjects(objectsDir: string, digests: Iterable<string>): Map<string, string> {
  const found = new Map<string, string>();
  for (const d of digests) {
    const p = join(resolve(objectsDir), objectPath(d));
    if (existsSync(p)) found.set(d, p);
  }
  return found;
}

/** The size field's top bit in a record header: the content is the next fd passed on the socket. */
export const CONTENT_BY_FD = 1n << 63n;

/** The 40 bytes before an object's content in the PutObjects stream (`byFd`: the content is the next fd passed instead). */
export function recordHeader(digest: string, size: number, byFd = false): Buffer {
  const h = Buffer.alloc(RECORD_HEADER_BYTES);
  h.write(digest, 0, 32, 'hex');
  h.writeBigUInt64LE(BigInt(size) | (byFd ? CONTENT_BY_FD : 0n), 32);
  return h;
}

export interface UploadProgress {
  objects: number;
  totalObjects: number;
  bytes: number;
  totalBytes: number;
}

export interface UploadResult {
  imageId: string;
  /** What PutObjects accepted (zero when the broker needed nothing). */
  uploaded: { objects: number; bytes: number };
}

/** The manifest JSON (one entry a line: see manifest/format.ts) in a sealed memfd: the only kind of manifest fd the broker reads (it can neither stall nor change). */
export function manifestFd(manifest: Manifest): number {
  return sealedMemfd('mountgate-manifest', Buffer.from(manifestJson(manifest)));
}

/** Streams the records of `digests` into `writeFd` (closed at the end, or on error). */
async function writeRecords(writeFd: number, todo: { digest: string; size: number; path: string | Buffer }[], onChunk: (bytes: number, objectDone: boolean) => void): Promise<void> {
  const out = createWriteStream('', { fd: writeFd, autoClose: true });
  const failed = new Promise<never>((_, reject) => out.once('error', reject));
  failed.catch(() => undefined);
  const write = async (chunk: Buffer) => {
    if (!out.write(chunk)) await Promise.race([once(out, 'drain'), failed]);
  };
  try {
    for (const { digest, size, path } of todo) {
      await write(recordHeader(digest, size));
      let sent = 0;
      for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
        if (sent + chunk.length > size) throw new InvalidRequestError(`${showText(path)} grew since the manifest was made (it was ${size} bytes)`);
        await write(chunk);
        sent += chunk.length;
        onChunk(chunk.length, false);
      }
      if (sent !== size) throw new InvalidRequestError(`${showText(path)} shrank since the manifest was made (${size} bytes, now ${sent})`);
      onChunk(0, true);
    }
    out.end();
    await Promise.race([once(out, 'close'), failed]);
  } catch (err) {
    out.destroy();
    throw err;
  }
}

const require = createRequire(import.meta.url);
interface USocket extends EventEmitter {
  write(chunk: { data?: Buffer; fds?: number[]; callback?: () => void }): boolean;
  end(): void;
  destroy(): void;
}

/** Records sent ahead of the broker's acknowledgements: the kernel bounds a user's fds in flight (by RLIMIT_NOFILE). */
const fdWindow = 256;
/** Records per sendmsg (SCM_RIGHTS carries at most 253 fds). */
const fdsPerMessage = 64;

/** An object on its way to the broker: an open file it hashes itself (the sender closes the fd once sent), or its bytes on the socket. */
export type OutgoingObject = { digest: string; size: number } & ({ fd: number } | { chunks: AsyncIterable<Buffer> });

/** How much may be sent ahead of the broker's acknowledgements: records, and bytes of the fds' contents. */
export interface SendWindow {
  records: number;
  bytes: number;
}

/**
 * Sends objects over `fd` (our end of a socketpair the broker reads): per
 * object a header, then either its fd passed alongside (the size says "by
 * fd"; the broker hashes the file itself) or its bytes. The broker answers
 * one byte per record it took; `next(room)` is asked for the next group (at
 * most `room.records` fd records adding up to about `room.bytes`, or one
 * object by bytes; undefined at the end) only when the window has room, so
 * what is in flight stays within `window`. Every fd of a group is closed
 * here once sent (or on failure); `onSent` hears of each group sent.
 */
export async function sendObjects(
  fd: number,
  next: (room: SendWindow) => Promise<OutgoingObject[] | undefined>,
  onSent: (group: OutgoingObject[]) => void,
  answered: Promise<unknown>,
  window: SendWindow = { records: fdWindow, bytes: Infinity },
): Promise<void> {
  const { USocket } = require('usocket') as { USocket: new (opts: { fd: number }) => USocket };
  const socket = new USocket({ fd });
  // Per record sent, the bytes it holds in flight (an fd's content; 0 for bytes already written).
  const held: number[] = [];
  let acked = 0;
  let heldBytes = 0;
  let failure: Error | undefined;
  const events = new EventEmitter();
  socket.on('data', (chunk: Buffer) => {
    for (let i = 0; i < chunk.length && acked < held.length; i++) heldBytes -= held[acked++]!;
    events.emit('ack');
  });
  const fail = (err: Error) => {
    failure ??= err;
    events.emit('ack');
  };
  socket.on('error', fail);
  socket.on('close', () => fail(new Error('the broker closed the object stream')));
  socket.on('end', () => fail(new Error('the broker closed the object stream')));
  // A broker that answers (a refusal) before the stream ends stops the sending even if the socket says nothing.
  let finished = false;
  answered.then(
    () => finished || fail(new Error('the broker answered before the object stream ended')),
    (err: Error) => fail(err),
  );
  const room = () => ({ records: Math.min(fdsPerMessage, window.records - (held.length - acked)), bytes: window.bytes - heldBytes });
  const write = (chunk: { data: Buffer; fds?: number[] }) =>
    new Promise<void>((resolve, reject) => {
      if (failure) return reject(failure);
      const onFail = () => failure && reject(failure);
      events.once('ack', onFail);
      socket.write({ ...chunk, callback: () => {
        events.off('ack', onFail);
        resolve();
      } });
    });
  try {
    for (;;) {
      // Room for a whole message of fds, and for more bytes (a group may overshoot by its last object).
      while ((room().records < fdsPerMessage && held.length > acked) || room().bytes <= 0) {
        if (failure) throw failure;
        await once(events, 'ack');
      }
      if (failure) throw failure;
      const group = await next(room());
      if (!group) break;
      const fds = group.flatMap((o) => ('fd' in o ? [o.fd] : []));
      try {
        const first = group[0]!;
        if ('chunks' in first) {
          if (group.length !== 1) throw new Error('sendObjects: an object sent by bytes goes in a group of its own');
          await write({ data: recordHeader(first.digest, first.size) });
          let sent = 0;
          for await (const c of first.chunks) {
            sent += c.length;
            if (sent > first.size) break;
            await write({ data: c });
          }
          if (sent !== first.size) throw new InvalidRequestError(`the content of object ${first.digest} changed since it was hashed (${first.size} bytes, then ${sent > first.size ? 'more' : sent})`);
          held.push(0);
        } else {
          await write({ data: Buffer.concat(group.map((o) => recordHeader(o.digest, o.size, true))), fds });
          for (const o of group) {
            held.push(o.size);
            heldBytes += o.size;
          }
        }
      } finally {
        // Sent (the kernel holds them in flight) or failed: our copies go either way.
        for (const f of fds) closeSync(f);
      }
      onSent(group);
    }
    // Everything is sent: our end says so; the socket stays open (for the broker's last acknowledgements) until the answer.
    finished = true;
    socket.end();
    await answered.catch(() => undefined);
  } finally {
    socket.destroy();
  }
}

/** Opens each file of a group (no symlink followed) for sendObjects, checking its size; on failure none stays open. */
function openGroup(group: { digest: string; size: number; path: string | Buffer }[]): OutgoingObject[] {
  const out: OutgoingObject[] = [];
  try {
    for (const o of group) {
      const file = openSync(o.path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
      out.push({ digest: o.digest, size: o.size, fd: file });
      const size = fstatSync(file).size;
      if (size !== o.size) throw new InvalidRequestError(`${showText(o.path)} changed since it was listed (${o.size} bytes, now ${size})`);
    }
  } catch (err) {
    for (const o of out) if ('fd' in o) closeSync(o.fd);
    throw err;
  }
  return out;
}

/** Sends the objects as open files (see sendObjects): the broker hashes the files itself; no content goes through the socket. */
async function sendFiles(fd: number, todo: { digest: string; size: number; path: string | Buffer }[], onObject: (bytes: number) => void, answered: Promise<unknown>): Promise<void> {
  let at = 0;
  const open = async (room: SendWindow): Promise<OutgoingObject[] | undefined> => {
    if (at >= todo.length) return undefined;
    const group = todo.slice(at, at + room.records);
    at += group.length;
    return openGroup(group);
  };
  await sendObjects(fd, open, (group) => group.forEach((o) => onObject(o.size)), answered);
}

/** The digest field of a ProveObjects record: the broker computes it. */
export const UNCLAIMED_DIGEST = '0'.repeat(64);

/**
 * Registers `manifest` with the broker and uploads the objects it reports
 * missing, reading each from `sources` (digest -> file path).
 */
export async function uploadImage(
  broker: MountgateBroker,
  manifest: Manifest,
  sources: Map<string, string | Buffer>,
  opts: {
    onProgress?: (p: UploadProgress) => void;
    /** How contents go to the broker: as open files it hashes itself (default), or as bytes through a pipe. */
    transport?: 'files' | 'pipe';
    /** Called once AddImage answered, before any object is sent. */
    onAdded?: (added: { imageId: string; missing: string[] }) => void;
  } = {},
): Promise<UploadResult> {
  const sizes = manifestObjects(manifest);
  const fd = manifestFd(manifest);
  let added: { imageId: string; missing: string[] };
  try {
    added = await broker.addImage(fd);
  } finally {
    closeFd(fd);
  }
  const { imageId, missing } = added;
  opts.onAdded?.(added);
  if (missing.length === 0) return { imageId, uploaded: { objects: 0, bytes: 0 } };

  const lacking = missing.filter((d) => !sources.has(d));
  if (lacking.length > 0) {
    const users = (d: string) => manifest.entries.filter((e) => e.type === 'file' && e.digest === d).map((e) => showText(e.path));
    const shown = lacking.slice(0, 3).map((d) => `${d} (needed by ${users(d).slice(0, 3).join(', ') || 'no file of the manifest'})`);
    throw new NotFoundError(
      `the broker needs ${lacking.length} object(s) that no source provides: ${shown.join('; ')}${lacking.length > 3 ? '; ...' : ''}` +
        '; give the directory the manifest was made from, or --objects DIR',
    );
  }
  const todo = missing.map((digest) => {
    const size = sizes.get(digest);
    if (size === undefined) throw new InvalidRequestError(`the broker asked for object ${digest}, which no file of the manifest has`);
    return { digest, size, path: sources.get(digest)! };
  });
  const progress: UploadProgress = { objects: 0, totalObjects: todo.length, bytes: 0, totalBytes: todo.reduce((n, o) => n + o.size, 0) };
  opts.onProgress?.({ ...progress });

  const [readFd, writeFd] = opts.transport === 'pipe' ? pipe() : socketpair();
  // Send the call first: the broker reads while we write. Our copy of the read
  // end stays open until the reply (dbus-next sends the fd asynchronously).
  const put = broker.putObjects(readFd).finally(() => closeFd(readFd));
  put.catch(() => undefined);
  const written =
    opts.transport === 'pipe'
      ? writeRecords(writeFd, todo, (bytes, done) => {
          progress.bytes += bytes;
          if (done) progress.objects++;
          opts.onProgress?.({ ...progress });
        })
      : sendFiles(writeFd, todo, (bytes) => {
          progress.bytes += bytes;
          progress.objects++;
          opts.onProgress?.({ ...progress });
        }, put);
  // A broker that refuses ends the call early: stop writing, report its reason.
  const [w, p] = await Promise.allSettled([written, put]);
  if (p.status === 'rejected') throw p.reason;
  if (w.status === 'rejected') throw w.reason;
  return { imageId, uploaded: p.value };
}

export { resolveImageRef } from './image-ref.js';
