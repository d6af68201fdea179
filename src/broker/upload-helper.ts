// An upload helper: a child of the front, one per PutObjects call (started
// ahead of it, see upload-helpers.ts), that does every read of the caller's
// data for it, so none happens on the front's event loop. It waits on fd 3,
// a socketpair with the front, for its call: the stream fd (a pipe, or an
// AF_UNIX stream socket that may carry the caller's open files as fds) and
// its prefix for tmp names. It reads the record stream, hashes every
// object, writes the ones the store lacks into the store's tmp directory,
// syncs them (one syncfs per batch) and reports them to the front, which
// alone publishes them and records them in the database. The front kills it
// when it goes quiet past its deadline (a file on a filesystem that never
// answers), so a stall costs only this call.
//
//   node upload-helper.js TMPDIR IDLE_MS [--verity]
// fd 3: one frame {"type": "call", "prefix": P, "kind": "pipe"|"socket"} with the stream fd.
// stdin: one JSON line {"pending": [[digest, size, present], ...]}, then "sync" lines.
// stdout: JSON lines: {"p":1} (alive: at least every 200 ms while its event
//   loop runs or it reads), {"b": [[digest, size, tmp name | null], ...]} (a
//   batch of verified objects, on disk), {"end":1}, {"synced":1}, {"e": message} (refused; exits).
import { closeSync, fchmodSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { FsVerityHasher } from '../verity/fsverity.js';
import { enableVerity } from '../store/objects.js';
import { readableFd, syncfs } from '../sys/syscalls.js';
import { Channel, type Frame } from './channel.js';
import { StreamReader } from './stream.js';

const [tmpDir, idleArg] = process.argv.slice(2) as [string, string];
const verity = process.argv.includes('--verity');
const idleMs = Number(idleArg);
/** The size field's top bit: the content is the next fd passed on the socket, not bytes in the stream. */
const BY_FD = 1n << 63n;
/** Objects, or bytes written, after which a batch is synced and reported. */
const batchObjects = 1024;
const batchBytes = 256 * 2 ** 20;
/** Records a socket sender may have in flight before it waits for our acknowledgements (one byte per record). */
const ackEvery = 32;

class Refusal extends Error {}

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
// Alive while the event loop turns (waiting for the stream); a read stuck in a filesystem stops this, and the front kills us.
const heartbeat = setInterval(() => progress(), 200);
const dirFd = openSync(tmpDir, 'r');
let serial = 0;
let batch: [string, number, string | null][] = [];
let batchWritten = 0;

/** One object into a tmp file (when `write`) while hashing it; returns the digest of what was read. */
class Sink {
  readonly hasher = new FsVerityHasher();
  private readonly fd: number | undefined;
  readonly name: string | null;
  received = 0;
  constructor(write: boolean) {
    this.name = write ? `${prefix}.${serial++}` : null;
    this.fd = this.name ? openSync(join(tmpDir, this.name), 'wx', 0o600) : undefined;
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
    if (this.fd !== undefined) {
      // Objects are read-only; fs-verity (enabled before the sync) wants no writer either.
      fchmodSync(this.fd, 0o444);
      closeSync(this.fd);
    }
    return this.hasher.digest().toString('hex');
  }
}

function flushBatch(): void {
  if (batch.length === 0) return;
  if (batchWritten > 0) {
    if (verity) for (const [, , tmp] of batch) if (tmp) enableVerity(join(tmpDir, tmp));
    syncfs(dirFd);
  }
  say({ b: batch });
  batch = [];
  batchWritten = 0;
}

/** Hashes (and copies) a regular file the caller passed, by position: its offset is the caller's. */
function fromFd(fd: number, size: number, sink: Sink): void {
  const st = fstatSync(fd);
  if (!st.isFile()) throw new Refusal('a passed fd is not a regular file (only regular files can prove an object)');
  if (!readableFd(fd)) throw new Refusal('a passed fd was not opened for reading');
  if (st.size !== size) throw new Refusal(`a passed file is ${st.size} bytes, its record says ${size}`);
  const buf = Buffer.allocUnsafe(Math.min(1 << 20, Math.max(size, 1)));
  let at = 0;
  while (at < size) {
    const n = readSync(fd, buf, 0, Math.min(buf.length, size - at), at);
    if (n === 0) break;
    sink.update(buf.subarray(0, n));
    at += n;
  }
}

async function run(): Promise<void> {
  const first = await nextLine();
  const pending = new Map<string, { size: number; present: boolean }>();
  for (const [d, size, present] of (JSON.parse(first ?? '{"pending":[]}') as { pending: [string, number, boolean][] }).pending) pending.set(d, { size, present });
  const reader = kind === 'socket' ? StreamReader.fromUnixSocket(call.stream, idleMs) : StreamReader.fromFd(call.stream, idleMs);
  let unacked = 0;
  const ack = () => {
    if (reader.write && unacked > 0) reader.write(Buffer.alloc(unacked));
    unacked = 0;
  };
  reader.onWait = ack;
  let objects = 0;
  try {
    for (;;) {
      const header = await reader.readExact(40);
      if (!header) break;
      const digest = header.subarray(0, 32).toString('hex');
      const raw = header.readBigUInt64LE(32);
      const byFd = (raw & BY_FD) !== 0n;
      const size = Number(raw & ~BY_FD);
      const expected = pending.get(digest);
      if (expected === undefined) throw new Refusal(`object ${digest} is not missing from any of your images; add the image first (AddImage)`);
      if (size !== expected.size) throw new Refusal(`object ${digest} is ${expected.size} bytes in your image, but the stream says ${size}`);
      const sink = new Sink(!expected.present);
      if (byFd) {
        const fd = reader.takeFd();
        if (fd === undefined) throw new Refusal(`the record of object ${digest} takes its content from a passed fd, but no fd came with it${kind === 'socket' ? '' : ' (fds can only be passed on an AF_UNIX socket)'}`);
        try {
          fromFd(fd, size, sink);
        } finally {
          closeSync(fd);
        }
      } else {
        for await (const chunk of reader.chunks(size)) sink.update(chunk);
      }
      const actual = sink.finish();
      if (sink.received !== size) throw new Refusal(`object ${digest}: got ${sink.received} bytes, expected ${size}; nothing of it was stored`);
      if (actual !== digest) throw new Refusal(`object ${digest}: its content hashes to ${actual}; nothing of it was stored`);
      pending.delete(digest);
      batch.push([digest, size, sink.name]);
      if (sink.name) batchWritten += size;
      objects++;
      if (reader.write && ++unacked >= ackEvery) ack();
      if (batch.length >= batchObjects || batchWritten >= batchBytes) flushBatch();
    }
    if (reader.queuedFds > 0) throw new Refusal(`${reader.queuedFds} fd(s) came that no record took`);
    flushBatch();
    ack();
    say({ end: 1, objects });
  } catch (err) {
    // Whatever of this call is still in the tmp directory, the front removes (by the prefix).
    reader.close();
    const message = err instanceof Refusal ? err.message : `the object stream failed after ${objects} object(s): ${(err as Error).message}`;
    say({ e: message });
    return;
  }
  reader.close();
  // The front has published the last batch: one more sync makes the names durable.
  if ((await nextLine()) === 'sync') {
    syncfs(dirFd);
    say({ synced: 1 });
  }
}

run()
  .catch((err: Error) => say({ e: `the upload helper failed: ${err.message}` }))
  .finally(() => {
    clearInterval(heartbeat);
    lines.close();
    process.stdout.write('', () => process.exit(0));
  });
