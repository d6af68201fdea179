// Facts about a caller's fd, gathered off the event loop: a prober process
// (probe-helper, from a small pool started on demand, idle-pool.ts) examines the fd through /proc/<front>/fd
// and is killed at the deadline, so an fd on a filesystem that never answers costs the caller its
// own request slot and nobody else anything. The mount facts come from the executor's mount
// table (the host's namespace, where callers' directories live; the front may run in a mount
// namespace of its own), which no caller can stall.
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { createInterface } from 'node:readline';
import { TimeoutError } from '../errors.js';
import type { FileKind, SourceFacts } from '../policy/decide.js';
import { fsTypeName, isKernelFilesystem } from '../sys/fsmagic.js';
import type { MountFacts } from '../sys/mountinfo.js';
import type { FairQueue } from './fair-queue.js';
import { IdlePool } from './idle-pool.js';
import { brokerEnv, nodeFlags, belowFront } from './node-flags.js';

const helperPath = new URL('./probe-helper.js', import.meta.url).pathname;

function kindOf(mode: number): FileKind {
  switch (mode & 0o170000) {
    case 0o040000: return 'directory';
    case 0o100000: return 'regular';
    case 0o120000: return 'symlink';
    case 0o010000: return 'fifo';
    case 0o140000: return 'socket';
    case 0o020000: return 'chardev';
    case 0o060000: return 'blockdev';
    default: return 'unknown';
  }
}

interface RawFacts {
  mode: number;
  uid: number;
  magic: number;
  path?: string;
  mountId: number;
}

/** One prober process, spoken to in JSON lines over its stdin and stdout; busy while it examines an fd. */
class Prober {
  private readonly child: ChildProcess;
  private readonly replies = new EventEmitter();
  private next = 1;
  private why = '';
  /** Resolves once the prober runs (its first line). */
  readonly ready: Promise<void>;

  constructor() {
    this.child = spawn(process.execPath, [...nodeFlags.prober, helperPath], { stdio: ['pipe', 'pipe', 'inherit'], env: { ...brokerEnv } });
    belowFront(this.child);
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      try {
        const reply = JSON.parse(line) as { id: number };
        this.replies.emit(String(reply.id), reply);
      } catch {
        this.kill();
      }
    });
    this.child.stdin!.on('error', () => undefined);
    this.ready = new Promise<void>((res) => {
      this.replies.once('0', () => res());
      this.replies.once('gone', () => res());
    });
    this.child.once('exit', (code, signal) => {
      this.why ||= `the prober exited (${signal ?? code})`;
      // Its pipes are ours to close: a dead prober must not keep fds of the front's.
      this.child.stdin!.destroy();
      this.child.stdout!.destroy();
      this.replies.emit('gone');
    });
  }

  /** What the prober finds for fd number `fd` of this process (the front), which must stay open until the answer. */
  async examine(fd: number, deadlineMs: number): Promise<RawFacts> {
    // A prober just started is given its start: the deadline is the fd's, not Node's.
    await this.ready;
    if (!this.alive) throw new Error(`the fd prober went away: ${this.why}`);
    const id = this.next++;
    return new Promise<RawFacts>((resolve, reject) => {
      let settled = false;
      // The deadline counts from now, when this probe starts (its wait in the
      // queue is not the fd's fault). Timers run before I/O in a turn of the
      // event loop: an answer that arrived while the loop was busy is read
      // first (setImmediate runs after the I/O), so only an fd that really did
      // not answer times out.
      const timer = setTimeout(() => {
        setImmediate(() => {
          if (settled) return;
          done();
          this.kill();
          reject(new TimeoutError(`the passed fd did not answer within ${deadlineMs / 1000} s (its filesystem, e.g. a FUSE server, is not responding); nothing was done`));
        });
      }, deadlineMs);
      const onReply = (reply: { facts?: RawFacts; error?: string }) => {
        done();
        if (reply.facts) resolve(reply.facts);
        else reject(new Error(`the fd probe failed: ${String(reply.error)}`));
      };
      const onGone = () => {
        done();
        reject(new Error(`the fd prober went away: ${this.why}`));
      };
      const done = () => {
        settled = true;
        clearTimeout(timer);
        this.replies.off(String(id), onReply);
        this.replies.off('gone', onGone);
      };
      this.replies.once(String(id), onReply);
      this.replies.once('gone', onGone);
      this.child.stdin!.write(`${JSON.stringify({ id, fd })}\n`);
    });
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null && !this.why;
  }

  kill(): void {
    this.why ||= 'killed at its deadline';
    this.child.kill('SIGKILL');
    // A prober stuck in a stalled filesystem may take until that filesystem answers to die: our ends of its pipes go now.
    this.child.stdin!.destroy();
    this.child.stdout!.destroy();
  }
}

/**
 * Prober processes, one fd each at a time, handed out through a fair queue
 * (whose slots bound how many run). They start when a probe needs one and
 * are let go when idle (IdlePool): a broker at rest holds none. A prober
 * that misses the deadline is killed (its stalled syscall ends with it);
 * only the stalled caller waited.
 */
class ProberPool {
  private readonly pool = new IdlePool(() => new Prober());

  constructor(private readonly queue: FairQueue, private readonly deadlineMs: number) {}

  run(uid: number, fd: number): Promise<RawFacts> {
    return this.queue.run(uid, async () => {
      const prober = this.pool.take();
      try {
        return await prober.examine(fd, this.deadlineMs);
      } finally {
        // Killed at its deadline (or gone): dropped, and the next probe starts another.
        this.pool.give(prober);
      }
    });
  }

  close(): void {
    this.pool.close();
  }
}

export interface FdProber {
  /** Source facts of `fd`, charged to `uid`'s turn in the shared probe queue. */
  sourceFacts(uid: number, fd: number): Promise<SourceFacts>;
  /** Lets the idle probers go. */
  close(): void;
}

/** The mount an fd is on, as the executor's mount namespace sees it. */
export type MountLookup = (mountId: number, path: string | undefined) => Promise<MountFacts>;

/** Probes on at most as many prober processes as `queue` has slots; mount facts from `mounts`. */
export function fdProber(queue: FairQueue, deadlineMs: number, mounts: MountLookup): FdProber {
  const pool = new ProberPool(queue, deadlineMs);
  return {
    close: () => pool.close(),
    async sourceFacts(uid, fd) {
      const raw = await pool.run(uid, fd);
      // Only a file's path can have mounts below it; a socket's or pipe's "path" is a name like socket:[N].
      const mount = await mounts(raw.mountId, raw.path?.startsWith('/') ? raw.path : undefined);
      return {
        kind: kindOf(raw.mode),
        ownerUid: raw.uid,
        fsType: fsTypeName(raw.magic),
        fsDenied: isKernelFilesystem(raw.magic),
        ...(raw.path ? { path: raw.path } : {}),
        inBrokerNamespace: mount.inNamespace,
        mountOptions: mount.options,
        mountsBelow: mount.below,
      };
    },
  };
}
