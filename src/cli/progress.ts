// Progress of `image add`, on standard error: a bar rewritten in place on a
// terminal, JSON lines with --json (for programs), nothing otherwise. Two
// phases: "read" (the source scanned: entries, and bytes of the archive as
// stored, or of a directory's file contents hashed) and "upload" (the
// objects the broker asked for). Rates are over the phase so far; an
// estimate is given only when the phase's total is known.
//
// Events (one JSON object a line; the numbers are integers but rate):
//   {"event":"read","entries":N,"bytes":N,"totalBytes"?:N,"rate":B/s,"etaSeconds"?:N,"elapsedSeconds":N,"done"?:true}
//   {"event":"upload","objects":N,"totalObjects":N,"bytes":N,"totalBytes":N,"rate":B/s,"etaSeconds"?:N,"elapsedSeconds":N,"done"?:true}
// The first and the last event of a phase ("done": true) are always written;
// between them at most two a second.

const MiB = 1024 * 1024;

export interface ReadState {
  entries: number;
  bytes: number;
  totalBytes?: number;
}

export interface UploadState {
  objects: number;
  totalObjects: number;
  bytes: number;
  totalBytes: number;
}

export type ProgressEvent =
  | ({ event: 'read' } & ReadState & Timing)
  | ({ event: 'upload' } & UploadState & Timing);

interface Timing {
  rate: number;
  etaSeconds?: number;
  elapsedSeconds: number;
  done?: true;
}

/** The event of a phase's state `elapsedMs` after the phase began. */
export function progressEvent(phase: 'read', state: ReadState, elapsedMs: number, done?: boolean): ProgressEvent;
export function progressEvent(phase: 'upload', state: UploadState, elapsedMs: number, done?: boolean): ProgressEvent;
export function progressEvent(phase: 'read' | 'upload', state: ReadState | UploadState, elapsedMs: number, done = false): ProgressEvent {
  const seconds = Math.max(elapsedMs, 1) / 1000;
  const rate = Math.round(state.bytes / seconds);
  const total = state.totalBytes;
  const eta = total !== undefined && rate > 0 ? Math.max(0, Math.ceil((total - state.bytes) / rate)) : undefined;
  return { event: phase, ...state, rate, ...(eta !== undefined && !done ? { etaSeconds: eta } : {}), elapsedSeconds: Math.round(seconds), ...(done ? { done: true as const } : {}) } as ProgressEvent;
}

function clock(s: number): string {
  const m = Math.floor(s / 60);
  return m >= 60 ? `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m` : `${m}:${String(s % 60).padStart(2, '0')}`;
}

const mib = (n: number) => (n / MiB).toFixed(1);

/** The terminal line of an event, at most `columns` characters: a bar when the total is known. */
export function progressLine(e: ProgressEvent, columns: number): string {
  const verb = e.event === 'read' ? 'reading  ' : 'uploading';
  const total = e.totalBytes;
  const fraction = total !== undefined && total > 0 ? Math.min(1, e.bytes / total) : total === 0 ? 1 : undefined;
  const parts: string[] = [verb];
  if (fraction !== undefined) {
    const width = 20;
    const filled = Math.round(fraction * width);
    parts.push(`[${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${String(Math.floor(fraction * 100)).padStart(3)}%`);
  }
  if (e.event === 'upload') parts.push(`${e.objects}/${e.totalObjects} objects`);
  else parts.push(`${e.entries} entries`);
  parts.push(total !== undefined ? `${mib(e.bytes)}/${mib(total)} MiB` : `${mib(e.bytes)} MiB`);
  parts.push(`${mib(e.rate)} MiB/s`);
  if (e.etaSeconds !== undefined) parts.push(`eta ${clock(e.etaSeconds)}`);
  if (e.done) parts.push(`in ${clock(e.elapsedSeconds)}`);
  const line = parts.join('  ');
  return line.length > columns ? line.slice(0, Math.max(0, columns)) : line;
}

export interface ProgressSink {
  /** Whether the output is a terminal (the bar) or --json was asked for (events); neither: nothing is written. */
  mode: 'tty' | 'json' | 'quiet';
  write(text: string): void;
  columns?(): number;
  now?(): number;
}

/** The sink of the process: standard error. */
export function stderrSink(json: boolean): ProgressSink {
  return {
    mode: json ? 'json' : process.stderr.isTTY ? 'tty' : 'quiet',
    write: (text) => void process.stderr.write(text),
    // A pty without a size (script(1) with no terminal of its own) says 0.
    columns: () => process.stderr.columns || 80,
  };
}

/** Reports the phases of one import to a sink, throttled. */
export class ImportProgress {
  private readonly now: () => number;
  private phase: { name: 'read'; state: ReadState } | { name: 'upload'; state: UploadState } | undefined;
  private started = 0;
  private last = -Infinity;
  private readonly readState: ReadState = { entries: 0, bytes: 0 };

  constructor(private readonly sink: ProgressSink) {
    this.now = sink.now ?? Date.now;
  }

  /** Whether anything will be shown (so a total is worth computing). */
  get active(): boolean {
    return this.sink.mode !== 'quiet';
  }

  /** The read phase's total bytes, once known. */
  readTotal(bytes: number): void {
    this.readState.totalBytes = bytes;
  }

  /** One more entry read. */
  entry(): void {
    this.readState.entries++;
    this.show({ name: 'read', state: this.readState });
  }

  /** The bytes of the source read so far. */
  readBytes(bytes: number): void {
    this.readState.bytes = bytes;
    this.show({ name: 'read', state: this.readState });
  }

  /** A directory walk's count: entries, and bytes of contents hashed so far. */
  readAt(entries: number, bytes: number): void {
    this.readState.entries = entries;
    this.readState.bytes = bytes;
    this.show({ name: 'read', state: this.readState });
  }

  upload(state: UploadState): void {
    const { objects, totalObjects, bytes, totalBytes } = state;
    this.show({ name: 'upload', state: { objects, totalObjects, bytes, totalBytes } });
    if (state.objects >= state.totalObjects) this.done();
  }

  /** Ends the phase in progress: its last event, and the end of its line on a terminal. */
  done(): void {
    if (!this.phase) return;
    this.write(true);
    if (this.sink.mode === 'tty') this.sink.write('\n');
    this.phase = undefined;
  }

  private show(phase: NonNullable<ImportProgress['phase']>): void {
    if (this.sink.mode === 'quiet') return;
    if (this.phase?.name !== phase.name) {
      this.done();
      this.started = this.now();
      this.last = -Infinity;
    }
    this.phase = phase;
    if (this.now() - this.last >= (this.sink.mode === 'json' ? 500 : 100)) this.write(false);
  }

  private write(done: boolean): void {
    const { name, state } = this.phase!;
    this.last = this.now();
    const e = name === 'read' ? progressEvent('read', state, this.last - this.started, done) : progressEvent('upload', state, this.last - this.started, done);
    if (this.sink.mode === 'json') this.sink.write(`${JSON.stringify(e)}\n`);
    else this.sink.write(`\r${progressLine(e, (this.sink.columns?.() ?? 80) - 1)}\x1b[K`);
  }
}
