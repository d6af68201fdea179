// A hashing thread of an upload helper (upload-helper.ts starts two, so that
// an upload hashes on two cores). It takes groups of passed files, each with
// the digest and size its record claims, and for each one: checks that it is
// a regular file of that size, reads it once by position (the caller's
// offset is the caller's), hashes every chunk it read and, when the store
// lacks the object, writes that same chunk to a new tmp file: what lands in
// the store is exactly what was hashed, whatever the caller does to its file
// meanwhile. It closes every fd it was given. It never trusts the claimed
// digest: it reports the digest it computed, and the helper compares.
// For ProveObjects (`prove`), where no digest is claimed: it hashes the file
// first; when the store has a file of that digest it writes nothing (the
// front pins that file, held.ts), else it copies the file to the tmp name,
// hashing the copy again (a file changed between the two reads is refused);
// a file read in one piece is copied from the buffer it was hashed from.
// Progress: it bumps its slot of a shared counter after every read, so the
// helper can tell a thread stuck in a read (a filesystem that never answers)
// from a busy one.
import { closeSync, existsSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { objectPath } from '../composefs/format.js';
import { parentPort, workerData } from 'node:worker_threads';
import { FsVerityHasher } from '../verity/fsverity.js';

export interface HashJob {
  /** The helper's number for the record. */
  id: number;
  fd: number;
  size: number;
  /** The tmp file to write the content to (the store lacks it), or null to hash only. */
  tmp: string | null;
  /** ProveObjects: no digest claimed; `tmp` gets a copy unless the store has the object. */
  prove?: boolean;
}

/** What was read (`received` bytes, hashing to `digest`; `present`: the store has it, no tmp file was made), or why the file cannot prove anything, or an error. */
export type HashResult = { id: number; digest: string; received: number; present?: boolean } | { id: number; refusal: string } | { id: number; failure: string };

export interface HashWorkerData {
  tmpDir: string;
  /** Int32 counters, one per thread, bumped after every read. */
  progress: SharedArrayBuffer;
  slot: number;
}

const { tmpDir, progress, slot } = workerData as HashWorkerData;
/** The store's objects, beside its tmp directory (ObjectStore's layout). */
const objectsDir = join(dirname(tmpDir), 'objects');
const counters = new Int32Array(progress);
const chunkBytes = 1 << 20;
const buf = Buffer.allocUnsafe(chunkBytes);
const hasher = new FsVerityHasher();

class Refusal extends Error {}

function writeAll(fd: number, data: Uint8Array): void {
  for (let at = 0; at < data.length; ) at += writeSync(fd, data, at, data.length - at);
}

/** Reads the passed file from offset 0 up to `size`, hashing each chunk and writing it to `out` too when given. */
function readHashing(fd: number, size: number, out: number | undefined): { digest: string; received: number; reads: number } {
  hasher.reset();
  let at = 0;
  let reads = 0;
  while (at < size) {
    let n: number;
    try {
      n = readSync(fd, buf, 0, Math.min(chunkBytes, size - at), at);
    } catch (err) {
      // An fd opened without read access (O_WRONLY, O_PATH): the read itself is the check.
      if ((err as NodeJS.ErrnoException).code === 'EBADF') throw new Refusal('a passed fd was not opened for reading');
      throw err;
    }
    Atomics.add(counters, slot, 1);
    if (n === 0) break;
    reads++;
    const chunk = buf.subarray(0, n);
    hasher.update(chunk);
    if (out !== undefined) writeAll(out, chunk);
    at += n;
  }
  return { digest: hasher.digest().toString('hex'), received: at, reads };
}

/** Created read-only (objects are 0444; fs-verity, enabled before the sync, wants no writer either): the fd open() returns may still write. */
function createTmp(name: string): number {
  return openSync(join(tmpDir, name), 'wx', 0o444);
}

/** Hashes (and, with a tmp name, copies) one passed file, up to its claimed size. */
function hashFile(job: HashJob): { digest: string; received: number; present?: boolean } {
  const st = fstatSync(job.fd);
  if (!st.isFile()) throw new Refusal('a passed fd is not a regular file (only regular files can prove an object)');
  if (st.size !== job.size) throw new Refusal(`a passed file is ${st.size} bytes, its record says ${job.size}`);
  if (job.prove) return proveFile(job);
  const out = job.tmp === null ? undefined : createTmp(job.tmp);
  try {
    const { digest, received } = readHashing(job.fd, job.size, out);
    return { digest, received };
  } finally {
    if (out !== undefined) closeSync(out);
  }
}

/** ProveObjects' way: hash; then nothing more when the store has the object, else the file copied to the tmp name. */
function proveFile(job: HashJob): { digest: string; received: number; present: boolean } {
  const tmp = job.tmp!;
  const { reads, ...first } = readHashing(job.fd, job.size, undefined);
  // Short: the helper refuses it by its size.
  if (first.received !== job.size) return { ...first, present: false };
  // A stat, no write: the front checks it again, in its turn, before it pins the file.
  if (existsSync(join(objectsDir, objectPath(first.digest)))) return { ...first, present: true };
  const out = createTmp(tmp);
  try {
    if (reads === 1) {
      // Read in one piece: what is in the buffer is what was hashed.
      writeAll(out, buf.subarray(0, job.size));
      return { ...first, present: false };
    }
    const copied = readHashing(job.fd, job.size, out);
    if (copied.digest !== first.digest || copied.received !== first.received) throw new Refusal(`a passed file (${job.size} bytes) changed while it was read`);
    return { digest: copied.digest, received: copied.received, present: false };
  } finally {
    closeSync(out);
  }
}

parentPort!.on('message', (jobs: HashJob[]) => {
  const results: HashResult[] = [];
  // After a refusal the upload is over: the rest of the group is only closed.
  let refused = false;
  for (const job of jobs) {
    try {
      if (!refused) results.push({ id: job.id, ...hashFile(job) });
    } catch (err) {
      refused = true;
      results.push(err instanceof Refusal ? { id: job.id, refusal: err.message } : { id: job.id, failure: (err as Error).message });
    } finally {
      closeSync(job.fd);
      Atomics.add(counters, slot, 1);
    }
  }
  parentPort!.postMessage(results);
});
