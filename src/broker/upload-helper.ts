// An upload helper: a child of the front, one per PutObjects call (started
// ahead of it, see upload-helpers.ts), that does every read of the caller's
// data for it, so none happens on the front's event loop. It waits on fd 3,
// a socketpair with the front, for its call: the stream fd (a pipe, or an
// AF_UNIX stream socket that may carry the caller's open files as fds) and
// its prefix for tmp names. It reads the record stream, hashes every
// object, writes the ones the store lacks into the store's tmp directory,
// syncs them (one syncfs per batch, while the hashing goes on) and reports
// them to the front, which alone publishes them and records them in the
// database. Passed files are hashed (and copied) on two threads
// (upload-worker.ts), started with the helper, before its call comes; bytes
// in the stream are hashed here. The front kills it when it goes quiet past
// its deadline (a file on a filesystem that never answers: a thread stuck in
// a read stops the heartbeat), so a stall costs only this call.
//
//   node upload-helper.js TMPDIR IDLE_MS [--verity]
// fd 3: one frame {"type": "call", "prefix": P, "kind": "pipe"|"socket"} with the stream fd.
// stdin: one JSON line {"pending": [[digest, size, present], ...]}, then "sync" lines;
//   or, for ProveObjects, {"prove": {"bytes": B, "records": N}}: records claim
//   no digest (all zeros), at most N of them adding up to at most B bytes, and
//   every object the store lacks gets a tmp file (a copy, synced with its
//   batch): what it holds is the front's to keep or drop (held.ts).
// stdout: JSON lines: {"p":1} (alive: at least every 200 ms while its event
//   loop runs or it reads), {"b": [[digest, size, tmp name | null], ...]} (a
//   batch of verified objects, on disk; for ProveObjects [digest, size, tmp
//   name | null (the store has it), record index]), {"end":1}, {"synced":1}, {"e": message, "limit"?: true} (refused, for a limit
//   of the caller's when "limit"; exits).
import { closeSync, openSync, writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { FsVerityHasher } from '../verity/fsverity.js';
import { enableVerity } from '../store/objects.js';
import { syncfsAsync } from '../sys/syscalls.js';
import { Channel, type Frame } from './channel.js';
import { StreamReader } from './stream.js';
import type { HashJob, HashResult, HashWorkerData } from './upload-worker.js';

const [tmpDir, idleArg] = process.argv.slice(2) as [string, string];
// The files this process creates get the modes it asks for (objects 0444, from their creation: no fchmod
// each), not fewer: the installed units run the broker with UMask=0077, which would make them 0400.
process.umask(0o022);
const verity = process.argv.includes('--verity');
const idleMs = Number(idleArg);
/** The size field's top bit: the content is the next fd passed on the socket, not bytes in the stream. */
const BY_FD = 1n << 63n;
/** The digest field of a ProveObjects record. */
const zeroDigest = '0'.repeat(64);
/** Objects, or bytes written, after which a batch is synced and reported. */
const batchObjects = 1024;
const batchBytes = 256 * 2 ** 20;
/** Records done between acknowledgements to a socket sender (one byte per record: it keeps a bounded window in flight). */
const ackEvery = 32;
/** Passed files taken from the socket and not yet hashed, at most (then the socket pushes back). */
const maxInFlight = 512;
/** Hashing threads. */
const threadCount = 2;

class Refusal extends Error {}
/** A refusal for a limit of the caller's (LimitExceeded, not InvalidRequest). */
class LimitRefusal extends Refusal {}

function say(line: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

let lastProgress = Date.now();
function progress(): void {
  const now = Date.now();
  if (now - lastProgress < 200) return;
  lastProgress = now;
  say({ p: 1 });
}

const lines = createInterface({ input: process.stdin });
const input = lines[Symbol.asyncIterator]();
const nextLine = async (): Promise<string | undefined> => {
  const n = await input.next();
  return n.done ? undefined : n.value;
};

/**
 * The hashing threads, each fed groups of jobs (one postMessage per group,
 * not per file): a job goes to the thread with the fewest bytes queued.
 */
class HashPool {
  private readonly progress = new SharedArrayBuffer(4 * threadCount);
  private readonly counters = new Int32Array(this.progress);
  private readonly threads: { worker: Worker; queued: HashJob[]; jobs: number; bytes: number; seen: number }[] = [];
  private readonly sizes = new Map<number, number>();
  private waiters: (() => void)[] = [];
  inFlight = 0;
  /** Where the results go, a group at a time, and where a thread's failure goes. */
  onResults: (results: HashResult[]) => void = () => undefined;
  onError: (err: Error) => void = () => undefined;

  constructor() {
    const url = new URL('./upload-worker.js', import.meta.url);
    for (let slot = 0; slot < threadCount; slot++) {
      const data: HashWorkerData = { tmpDir, progress: this.progress, slot };
      // The fds a thread closes came from the socket, not from its own opens: no warning for each.
      const worker = new Worker(url, { workerData: data, resourceLimits: { maxOldGenerationSizeMb: 64 }, trackUnmanagedFds: false });
      const thread = { worker, queued: [] as HashJob[], jobs: 0, bytes: 0, seen: 0 };
      worker.on('message', (results: HashResult[]) => {
        for (const r of results) {
          thread.jobs--;
          thread.bytes -= this.sizes.get(r.id) ?? 0;
          this.sizes.delete(r.id);
        }
        this.inFlight -= results.length;
        this.onResults(results);
        const waiters = this.waiters;
        this.waiters = [];
        for (const w of waiters) w();
      });
      worker.on('error', (err) => this.onError(err));
      worker.unref();
      this.threads.push(thread);
    }
  }

  /** Queues a job (sent with the next `send`); per-file costs count as 64 KiB, so small files spread too. */
  add(job: HashJob): void {
    const cost = job.size + 65536;
    const thread = this.threads.reduce((a, b) => (b.bytes < a.bytes ? b : a));
    thread.queued.push(job);
    thread.jobs++;
    thread.bytes += cost;
    this.sizes.set(job.id, cost);
    this.inFlight++;
  }

  /** Sends every thread its queued jobs. */
  send(): void {
    for (const t of this.threads) {
      if (t.queued.length === 0) continue;
      t.worker.postMessage(t.queued);
      t.queued = [];
    }
  }

  /** Resolves once fewer than `n` jobs are in flight. */
  async below(n: number): Promise<void> {
    this.send();
    while (this.inFlight >= n) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /** Whether a thread with work has read nothing since the last call (stuck in a read, e.g. of a file whose filesystem does not answer). */
  stuck(): boolean {
    let stuck = false;
    this.threads.forEach((t, slot) => {
      const now = Atomics.load(this.counters, slot);
      if (t.jobs > 0 && t.queued.length < t.jobs && now === t.seen) stuck = true;
      t.seen = now;
    });
    return stuck;
  }
}

// Started now, while the helper waits for its call.
const pool = new HashPool();

/** The call, once the front hands it over; a front that goes away first ends this helper. */
const call = await new Promise<{ prefix: string; kind: string; stream: number }>((resolve) => {
  const channel = new Channel(3);
  channel.once('close', () => process.exit(0));
  channel.once('frame', (frame: Frame, fds: number[]) => {
    const [stream, ...extra] = fds;
    for (const fd of extra) closeSync(fd);
    if (frame.type !== 'call' || typeof frame.prefix !== 'string' || !/^[0-9a-z-]+$/.test(frame.prefix) || stream === undefined) process.exit(2);
    channel.removeAllListeners('close');
    // Not from inside the channel's own read callback.
    setImmediate(() => channel.close());
    resolve({ prefix: frame.prefix, kind: frame.kind === 'socket' ? 'socket' : 'pipe', stream });
  });
});
const { prefix, kind } = call;
// Alive while the event loop turns and no hashing thread is stuck in a read; else the front kills us.
const heartbeat = setInterval(() => {
  if (pool.stuck()) return;
  lastProgress = Date.now();
  say({ p: 1 });
}, 200);
const dirFd = openSync(tmpDir, 'r');
let serial = 0;
/** A batch's items: [digest, size, tmp | null], and for ProveObjects [.., record index]. */
type Done = [string, number, string | null] | [string, number, string | null, number];
let batch: Done[] = [];
/** ProveObjects: what the call may hold (the front's allowance). */
let proving: { bytes: number; records: number } | undefined;
let batchWritten = 0;
/** Batches being synced and said, in order. */
let flushing: Promise<void> = Promise.resolve();
let objects = 0;
/** Whether this call wrote any object (else there is nothing to sync, neither contents nor names). */
let wroteAny = false;
let over = false;

/** Ends the call with a refusal or a failure (what this call left in the tmp directory, the front removes by its prefix). */
function refuse(message: string, limit = false): void {
  if (over) return;
  over = true;
  say({ e: message, ...(limit ? { limit: true } : {}) });
  process.stdout.write('', () => process.exit(0));
}

/** One object into a tmp file (when `write`) while hashing it; for bytes that come in the stream. */
class Sink {
  readonly hasher = new FsVerityHasher();
  private readonly fd: number | undefined;
  received = 0;
  constructor(readonly name: string | null) {
    // Read-only from its creation (as in upload-worker.ts): the returned fd still writes.
    this.fd = this.name ? openSync(join(tmpDir, this.name), 'wx', 0o444) : undefined;
  }
  update(chunk: Uint8Array): void {
    this.hasher.update(chunk);
    this.received += chunk.length;
    if (this.fd !== undefined) {
      let at = 0;
      while (at < chunk.length) at += writeSync(this.fd, chunk, at, chunk.length - at);
    }
    progress();
  }
  finish(): string {
    if (this.fd !== undefined) closeSync(this.fd);
    return this.hasher.digest().toString('hex');
  }
}

/** Syncs the batch so far (on a pool thread, while the hashing goes on) and reports it to the front. */
function flushBatch(): Promise<void> {
  const done = batch;
  batch = [];
  batchWritten = 0;
  if (done.length === 0) return flushing;
  flushing = flushing.then(async () => {
    if (done.some(([, , tmp]) => tmp !== null)) {
      if (verity) for (const [, , tmp] of done) if (tmp) enableVerity(join(tmpDir, tmp));
      // Copies too (ProveObjects'), as the hashing goes on: left to the AddImage that adopts them, one
      // syncfs there wrote back every copy's bytes at once (seconds for /usr/share's 505 MiB).
      await syncfsAsync(dirFd);
    }
    if (!over) say({ b: done });
  });
  flushing.catch((err: Error) => refuse(`the object stream failed after ${objects} object(s): ${err.message}`));
  return flushing;
}

/** An object whose content hashed to `actual` (`received` bytes): into the batch, or the end of the call. */
function completed(digest: string, size: number, tmp: string | null, received: number, actual: string, proved?: { index: number; present: boolean }): void {
  if (received !== size) throw new Refusal(proved ? `record ${proved.index}: got ${received} bytes, expected ${size}; nothing of it is held` : `object ${digest}: got ${received} bytes, expected ${size}; nothing of it was stored`);
  // ProveObjects claims no digest: what it hashed to is the object's.
  if (!proved && actual !== digest) throw new Refusal(`object ${digest}: its content hashes to ${actual}; nothing of it was stored`);
  // A proven object the store has is pinned, not copied: the helper made no file for it.
  if (proved?.present) tmp = null;
  batch.push(proved ? [actual, size, tmp, proved.index] : [digest, size, tmp]);
  if (tmp) {
    batchWritten += size;
    wroteAny = true;
  }
  objects++;
  if (batch.length >= batchObjects || batchWritten >= batchBytes) void flushBatch();
}

const failed = (err: unknown) => refuse(err instanceof Refusal ? err.message : `the object stream failed after ${objects} object(s): ${(err as Error).message}`, err instanceof LimitRefusal);

async function run(): Promise<void> {
  const first = JSON.parse((await nextLine()) ?? '{"pending":[]}') as { pending?: [string, number, boolean][]; prove?: { bytes: number; records: number } };
  const pending = new Map<string, { size: number; present: boolean }>();
  for (const [d, size, present] of first.pending ?? []) pending.set(d, { size, present });
  proving = first.prove;
  let heldBytes = 0;
  let records = 0;
  const reader = kind === 'socket' ? StreamReader.fromUnixSocket(call.stream, idleMs) : StreamReader.fromFd(call.stream, idleMs);
  let unacked = 0;
  const ack = () => {
    if (reader.write && unacked > 0) reader.write(Buffer.alloc(unacked));
    unacked = 0;
  };
  const done = () => {
    if (reader.write && ++unacked >= ackEvery) ack();
  };
  /** The records whose files the threads hash: id -> what the record claims. */
  const claims = new Map<number, { digest: string; size: number; tmp: string | null; index: number }>();
  let nextId = 0;
  pool.onError = failed;
  pool.onResults = (results) => {
    try {
      for (const r of results) {
        const claim = claims.get(r.id)!;
        claims.delete(r.id);
        if ('refusal' in r) throw new Refusal(r.refusal);
        if ('failure' in r) throw new Error(r.failure);
        completed(claim.digest, claim.size, claim.tmp, r.received, r.digest, proving ? { index: claim.index, present: r.present === true } : undefined);
        done();
      }
      // What a thread finished is acknowledged at once, not only at every ackEvery-th record: a sender whose
      // window is full (a few large files can fill its bytes) sends nothing more until it hears, and the
      // reader may be waiting for it already.
      ack();
    } catch (err) {
      failed(err);
    }
  };
  // Before the reader waits for more: the threads get what came, the sender its acknowledgements.
  reader.onWait = () => {
    pool.send();
    ack();
  };
  try {
    for (;;) {
      if (pool.inFlight >= maxInFlight) await pool.below(maxInFlight / 2);
      const header = await reader.readExact(40);
      if (over) return;
      if (!header) break;
      const digest = header.subarray(0, 32).toString('hex');
      const raw = header.readBigUInt64LE(32);
      const byFd = (raw & BY_FD) !== 0n;
      const size = Number(raw & ~BY_FD);
      const index = records++;
      // Where the content is copied: ProveObjects copies what the store may lack (the thread decides once it knows the digest), PutObjects what it lacks.
      let tmp: string | null;
      if (proving) {
        // ProveObjects: the broker says what the content is; the caller claims only its size.
        if (digest !== zeroDigest) throw new Refusal(`record ${index} claims a digest; ProveObjects records carry 32 zero bytes where PutObjects has the digest (the broker computes it)`);
        if (size === 0) throw new Refusal(`record ${index} is of 0 bytes; an empty file is no object (the manifest gives it size 0 and no digest)`);
        if (records > proving.records) throw new LimitRefusal(`more than ${proving.records} record(s): that is as many objects as the broker may hold for you now (the policy's maxEntriesPerImage, less what it holds for you already); send fewer per call, or add the image that needs what is held`);
        heldBytes += size;
        if (heldBytes > proving.bytes) throw new LimitRefusal(`holding these objects would take more than the ${proving.bytes} byte(s) your quota leaves (what your images take and what the broker holds for you count); nothing of this call is held`);
        tmp = `${prefix}.${serial++}`;
      } else {
        const expected = pending.get(digest);
        if (expected === undefined) throw new Refusal(`object ${digest} is not missing from any of your images; add the image first (AddImage)`);
        if (size !== expected.size) throw new Refusal(`object ${digest} is ${expected.size} bytes in your image, but the stream says ${size}`);
        pending.delete(digest);
        tmp = expected.present ? null : `${prefix}.${serial++}`;
      }
      if (byFd) {
        const fd = reader.takeFd();
        if (fd === undefined) throw new Refusal(`${proving ? `record ${index}` : `the record of object ${digest}`} takes its content from a passed fd, but no fd came with it${kind === 'socket' ? '' : ' (fds can only be passed on an AF_UNIX socket)'}`);
        const id = nextId++;
        claims.set(id, { digest, size, tmp, index });
        pool.add({ id, fd, size, tmp, ...(proving ? { prove: true } : {}) });
      } else {
        const sink = new Sink(tmp);
        for await (const chunk of reader.chunks(size)) sink.update(chunk);
        completed(digest, size, tmp, sink.received, sink.finish(), proving ? { index, present: false } : undefined);
        done();
      }
    }
    if (reader.queuedFds > 0) throw new Refusal(`${reader.queuedFds} fd(s) came that no record took`);
    await pool.below(1);
    if (over) return;
    await flushBatch();
    ack();
    if (over) return;
    say({ end: 1, objects });
  } catch (err) {
    reader.close();
    failed(err);
    return;
  }
  reader.close();
  // The front has published the last batch: one more sync makes the names durable.
  if ((await nextLine()) === 'sync') {
    if (wroteAny) await syncfsAsync(dirFd);
    say({ synced: 1 });
  }
}

run()
  .catch((err: Error) => say({ e: `the upload helper failed: ${err.message}` }))
  .finally(() => {
    if (over) return;
    clearInterval(heartbeat);
    lines.close();
    process.stdout.write('', () => process.exit(0));
  });
