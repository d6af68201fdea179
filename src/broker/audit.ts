// One structured line per decision, on stdout for the journal: who asked,
// what, the verdict, the reasons, and what was mounted. The executor writes
// its few lines at once (stdoutAudit); the front, which writes one or two
// per call, hands them to an AuditWriter: the lines of one turn of the event
// loop leave in one write, made off the event loop, so a journal that reads
// slowly holds up no caller.
import { write, writeSync } from 'node:fs';

export interface AuditRecord {
  event: 'decision' | 'result' | 'start' | 'ready' | 'policy' | 'error' | 'stop' | 'store';
  method?: string;
  caller?: { uid: number; pid: number; name?: string; bus?: string };
  allowed?: boolean;
  reason?: string;
  message?: string;
  checks?: string[];
  mounted?: unknown;
  [key: string]: unknown;
}

export type AuditSink = (record: AuditRecord) => void;

/** Longest string field of an audit line: a caller's echoed text must not flood the journal. */
const maxFieldChars = 8192;

function capped(value: unknown): unknown {
  if (typeof value === 'string') return value.length > maxFieldChars ? `${value.slice(0, maxFieldChars)} ... (${value.length - maxFieldChars} more characters)` : value;
  if (Array.isArray(value)) return (value.length > 200 ? [...value.slice(0, 200), `... and ${value.length - 200} more`] : value).map(capped);
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, capped(v)]));
  return value;
}

/** The audit line of a record, stamped with the time it was made. */
function auditLine(record: AuditRecord): string {
  return `${JSON.stringify(capped({ time: new Date().toISOString(), ...record }))}\n`;
}

export const stdoutAudit: AuditSink = (record) => {
  process.stdout.write(auditLine(record));
};

/** Bytes of audit lines held while the reader is behind; lines past it are counted, dropped, and reported once it caught up. */
const maxBacklogBytes = 8 * 2 ** 20;

type WriteFn = (fd: number, buffer: Buffer, done: (err: NodeJS.ErrnoException | null, written: number) => void) => void;

/**
 * Audit lines to `fd` without blocking the event loop: the lines of one turn
 * are joined and written by one write(2) in libuv's thread pool, one write at
 * a time (so they stay in order). The backlog is bounded: a reader more than
 * maxBacklogBytes behind costs lines, never memory, and is told how many.
 */
export class AuditWriter {
  private pending: string[] = [];
  private pendingBytes = 0;
  private writing = false;
  private scheduled = false;
  private dropped = 0;
  private readonly idle: (() => void)[] = [];

  constructor(
    private readonly fd = 1,
    private readonly writeFd: WriteFn = (fd, buffer, done) => write(fd, buffer, 0, buffer.length, null, done),
    private readonly maxBytes = maxBacklogBytes,
  ) {}

  readonly sink: AuditSink = (record) => this.push(auditLine(record));

  private push(line: string): void {
    if (this.pendingBytes + line.length > this.maxBytes) {
      this.dropped++;
      return;
    }
    this.pending.push(line);
    this.pendingBytes += line.length;
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || this.writing) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  /** Takes what is pending as one buffer (with the count of dropped lines, once there is room again). */
  private take(): Buffer | undefined {
    if (this.dropped > 0 && this.pendingBytes < this.maxBytes / 2) {
      const n = this.dropped;
      this.dropped = 0;
      this.pending.push(auditLine({ event: 'error', message: `${n} audit record(s) were dropped: the broker's output was not read fast enough (more than ${this.maxBytes} bytes behind)` }));
    }
    if (this.pending.length === 0) return undefined;
    const buffer = Buffer.from(this.pending.join(''));
    this.pending = [];
    this.pendingBytes = 0;
    return buffer;
  }

  private flush(): void {
    if (this.writing) return;
    const buffer = this.take();
    if (!buffer) {
      for (const resolve of this.idle.splice(0)) resolve();
      return;
    }
    this.writing = true;
    const send = (rest: Buffer) => {
      this.writeFd(this.fd, rest, (err, written) => {
        if (err?.code === 'EAGAIN') {
          setTimeout(() => send(rest), 10);
          return;
        }
        if (!err && written < rest.length) {
          send(rest.subarray(written));
          return;
        }
        // A reader that went away (EPIPE) or any other failure: these lines are lost, later ones are tried again.
        if (err) this.dropped += rest.toString().split('\n').length - 1;
        this.writing = false;
        this.flush();
      });
    };
    send(buffer);
  }

  /** Resolves once every line so far is written (or `timeoutMs` passed). */
  drain(timeoutMs: number): Promise<void> {
    if (!this.writing && !this.scheduled && this.pending.length === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.idle.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Writes what is pending at once, for an exit that cannot wait (a write still in flight may land after it). */
  flushSync(): void {
    const buffer = this.take();
    if (!buffer) return;
    try {
      writeSync(this.fd, buffer);
    } catch {
      // nowhere left to write to
    }
  }
}
