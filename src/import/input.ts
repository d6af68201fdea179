// Where an archive's bytes come from: a file (read again for the upload), or
// standard input (read again when it is a file; otherwise its contents are
// kept in memory as they go by, up to a limit, since a pipe cannot be
// rewound), or a command's output (run again for the upload).
import { createReadStream, fstatSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { InvalidRequestError, LimitExceededError } from '../errors.js';

export interface ArchiveInput {
  what: string;
  /** The archive's bytes from the start (a new read each time). */
  open(signal?: AbortSignal): AsyncIterable<Buffer>;
  /** Whether open() can be called again after the first read. */
  rereadable: boolean;
}

export function fileInput(path: string): ArchiveInput {
  return { what: path, rereadable: true, open: (signal) => createReadStream(path, { highWaterMark: 1 << 20, ...(signal ? { signal } : {}) }) };
}

export function stdinInput(): ArchiveInput {
  if (fstatSync(0).isFile()) {
    // A redirected file: read it from the start, as often as needed, at our own offsets.
    return { what: 'standard input', rereadable: true, open: (signal) => createReadStream('', { fd: 0, start: 0, autoClose: false, highWaterMark: 1 << 20, ...(signal ? { signal } : {}) }) };
  }
  let used = false;
  return {
    what: 'standard input',
    rereadable: false,
    open() {
      if (used) throw new Error('import: standard input read twice');
      used = true;
      return process.stdin;
    },
  };
}

/** The standard output of `command`, streamed; its failure (exit status, stderr) is the read's error. */
export function commandInput(what: string, command: string, args: string[]): ArchiveInput {
  return {
    what,
    rereadable: true,
    async *open(signal) {
      const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(signal ? { signal } : {}) });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr = (stderr + s).slice(-4000)));
      const exited = new Promise<number | null>((resolve, reject) => {
        child.once('error', reject);
        child.once('close', (code) => resolve(code));
      });
      exited.catch(() => undefined);
      let complete = false;
      try {
        for await (const chunk of child.stdout as AsyncIterable<Buffer>) yield chunk;
        const code = await exited;
        if (code !== 0) throw new InvalidRequestError(`${what}: ${command} ${args.join(' ')} failed (exit ${code}): ${stderr.trim() || 'no message'}`);
        complete = true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new InvalidRequestError(`${what}: ${command} is not installed`);
        throw err;
      } finally {
        if (!complete) child.kill('SIGTERM');
      }
    },
  };
}

/** The chunks of `source` as they are; `onBytes` hears the running count of bytes passed (for progress). */
export async function* counted(source: AsyncIterable<Buffer>, onBytes?: (bytes: number) => void): AsyncGenerator<Buffer> {
  let n = 0;
  for await (const c of source) {
    n += c.length;
    onBytes?.(n);
    yield c;
  }
}

/** Contents kept in memory for an input that cannot be read twice, at most `limit` bytes. */
export class MemoryObjects {
  private readonly kept = new Map<string, Buffer[]>();
  private bytes = 0;

  constructor(private readonly limit: number, private readonly what: string) {}

  keep(digest: string, size: number, pieces: Buffer[]): void {
    if (this.kept.has(digest)) return;
    this.bytes += size;
    if (this.bytes > this.limit) {
      throw new LimitExceededError(`${this.what} holds more than ${Math.round(this.limit / 2 ** 20)} MiB of file contents, which a pipe makes mountgate keep in memory; give the archive as a file (or raise --memory)`);
    }
    // One exact copy: pieces may be views into much larger chunks of the stream.
    this.kept.set(digest, [Buffer.concat(pieces)]);
  }

  get(digest: string): Buffer[] | undefined {
    return this.kept.get(digest);
  }
}
