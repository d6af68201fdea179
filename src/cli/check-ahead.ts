// A large manifest's entries checked on a second thread, ahead of the build
// that turns them into inodes. The streaming path (composefs/manifest-tree.ts)
// parses each entry, checks it against the schema of its kind and by
// EntryChecker, and only then makes its inode; the checks are about a fifth
// of building /usr's image. Here a worker does the parse and the checks of
// every entry in order and publishes, in memory both threads share, how many entries from
// the first it found sound and each one's directory; the build parses each
// entry again for its inode, but never uses one the worker has not passed.
// So the build takes nothing the single-threaded path would not, and gives up
// (to the whole-manifest path, which words the refusal) where it would: at
// the first entry the worker refuses, or when the worker stops answering.
//
// The worker reads each entry's piece of the text where the build read it
// from, in memory both threads share (manifestText's text is ASCII bytes).
import { existsSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import type { CheckAhead as EntryChecksAhead } from '../composefs/manifest-tree.js';
import type { ManifestLayout } from '../manifest/scan.js';

/** The control words: how many entries from the first the worker found sound, and whether it gave up. */
export const CHECKED = 0;
export const GAVE_UP = 1;

/** What the worker is given: all of it memory both threads share. */
export interface CheckAheadData {
  /** The manifest's text, ASCII bytes. */
  text: SharedArrayBuffer;
  count: number;
  /** Entry k is text[starts[k], ends[k]) (Uint32). */
  starts: SharedArrayBuffer;
  ends: SharedArrayBuffer;
  /** Int32 [CHECKED, GAVE_UP]. */
  control: SharedArrayBuffer;
  /** Int32 per entry: the index of the directory holding it (-1 for the root), once checked. */
  parents: SharedArrayBuffer;
}

/**
 * From this size of manifest text (about 50,000 entries) an `image build`
 * checks the entries on a worker: below it, starting one costs about what it
 * saves (bench/notes/writer.md).
 */
export const CHECK_AHEAD_MIN_BYTES = 16 * 1024 * 1024;

/** How often the worker publishes its progress, in entries. */
export const PUBLISH_EVERY = 256;

/**
 * How long the build waits on a worker that makes no progress before it gives
 * up on it (a worker that died cannot say so to a thread blocked waiting).
 */
const STALL_MS = 10_000;

function sharedCopy(from: Uint32Array, count: number): SharedArrayBuffer {
  const buffer = new SharedArrayBuffer(count * 4);
  new Uint32Array(buffer).set(from.subarray(0, count));
  return buffer;
}

/**
 * The worker's module: the built one beside this one. Under the test runner
 * (this module as TypeScript), the build's (test/run.sh builds first): the
 * runner's TypeScript loader takes over a second to start a worker; its own
 * source only when there is no build.
 */
function workerUrl(): URL {
  if (!import.meta.url.endsWith('.ts')) return new URL('./check-ahead-worker.js', import.meta.url);
  const built = new URL('../../dist/src/cli/check-ahead-worker.js', import.meta.url);
  return existsSync(built) ? built : new URL('./check-ahead-worker.ts', import.meta.url);
}

/**
 * The worker checking a manifest's entries, and what it has found so far.
 * Made before the text is read, so that the worker's start (a thread, its
 * heap, the schema's validators) overlaps the reading; `start` gives it the
 * text.
 */
export class CheckAhead implements EntryChecksAhead {
  private readonly control = new Int32Array(new SharedArrayBuffer(8));
  /** Entry i's directory, valid once `checked(i)` said so. */
  parents: Int32Array<ArrayBufferLike> = new Int32Array(0);
  private readonly worker: Worker;

  /** `stallMs`: how long `checked` waits on a worker that makes no progress before it gives up on it. */
  constructor(private readonly stallMs = STALL_MS) {
    // Its heap holds one parsed entry at a time: a small young generation keeps it small.
    const url = workerUrl();
    // (The built module needs none of the process's flags: a test runner's loader would only slow its start.)
    const execArgv = url.pathname.endsWith('.js') ? [] : process.execArgv;
    this.worker = new Worker(url, { resourceLimits: { maxYoungGenerationSizeMb: 4 }, execArgv });
    // Its own errors end in GAVE_UP or a stall, which the build sees; the process need not wait for it.
    this.worker.on('error', () => Atomics.store(this.control, GAVE_UP, 1));
    this.worker.unref();
  }

  /** The text, until the worker has it. */
  private text: Buffer | undefined;

  /**
   * The manifest's text in shared memory, as manifestTextBytes(bytes, true)
   * gives it (ASCII), which the worker reads where it is. Held here only
   * until `start`: then only the worker holds it, until it is done.
   */
  share(text: Buffer): void {
    if (!(text.buffer instanceof SharedArrayBuffer && text.byteOffset === 0 && text.length === text.buffer.byteLength)) {
      throw new TypeError('CheckAhead.share takes the whole of a SharedArrayBuffer (manifestTextBytes(bytes, true))');
    }
    this.text = text;
  }

  /** Starts the worker's checks of the shared text's entries, cut as `layout` says. */
  start(layout: ManifestLayout): void {
    const text = this.text;
    if (text === undefined) throw new Error('CheckAhead.start before share');
    this.text = undefined;
    const parents = new SharedArrayBuffer(layout.count * 4);
    this.parents = new Int32Array(parents);
    const data: CheckAheadData = {
      text: text.buffer as SharedArrayBuffer,
      count: layout.count,
      starts: sharedCopy(layout.starts, layout.count),
      ends: sharedCopy(layout.ends, layout.count),
      control: this.control.buffer as SharedArrayBuffer,
      parents,
    };
    this.worker.postMessage(data);
  }

  /**
   * Whether entry i and every one before it passed the worker's checks:
   * waits for the worker to get there; false once it gave up at or before i,
   * or made no progress for `stallMs`.
   */
  checked(i: number): boolean {
    const control = this.control;
    for (;;) {
      const checked = Atomics.load(control, CHECKED);
      if (checked > i) return true;
      if (Atomics.load(control, GAVE_UP) !== 0) return false;
      if (Atomics.wait(control, CHECKED, checked, this.stallMs) === 'timed-out' && Atomics.load(control, CHECKED) === checked) return false;
    }
  }

  /** Lets the worker go (it may still be checking entries the build no longer needs). */
  stop(): void {
    this.text = undefined;
    void this.worker.terminate();
  }
}
