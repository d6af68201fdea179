// Uncompressed bytes of a layer, whatever it was compressed with: gzip
// through node:zlib; zstd through the zstd program when it is installed
// (Debian's zstd: 8-15x faster than JavaScript here, and it checks the
// frames' checksums), else through fzstd (pure JavaScript: Node 20's zlib
// has no zstd, and a native binding would need a compiler at install); or
// none. Which one is told by the first bytes, not by the file's name.
// MOUNTGATE_ZSTD=js forces fzstd.
import { spawn } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { Decompress } from 'fzstd';
import { InvalidRequestError } from '../errors.js';

export type Compression = 'gzip' | 'zstd' | 'none';

export function sniffCompression(head: Buffer, what: string): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  if (head.length >= 6 && head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) throw new InvalidRequestError(`${what} is xz-compressed, which mountgate does not read: decompress it first (xz -d) or recompress it with gzip or zstd`);
  if (head.length >= 3 && head.toString('latin1', 0, 3) === 'BZh') throw new InvalidRequestError(`${what} is bzip2-compressed, which mountgate does not read: decompress it first (bzip2 -d) or recompress it with gzip or zstd`);
  return 'none';
}

/** The first `n` bytes of a stream (fewer if it is shorter), and the whole stream again. */
async function peek(chunks: AsyncIterable<Uint8Array>, n: number): Promise<{ head: Buffer; all: AsyncIterable<Buffer> }> {
  const it = chunks[Symbol.asyncIterator]();
  const seen: Buffer[] = [];
  let have = 0;
  let done = false;
  while (have < n) {
    const r = await it.next();
    if (r.done) {
      done = true;
      break;
    }
    const b = Buffer.from(r.value.buffer, r.value.byteOffset, r.value.length);
    seen.push(b);
    have += b.length;
  }
  async function* all(): AsyncGenerator<Buffer> {
    yield* seen;
    if (done) return;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield Buffer.from(r.value.buffer, r.value.byteOffset, r.value.length);
    }
  }
  return { head: Buffer.concat(seen).subarray(0, n), all: all() };
}

async function* gunzip(chunks: AsyncIterable<Buffer>, what: string): AsyncGenerator<Buffer> {
  const z = createGunzip({ chunkSize: 1 << 20 });
  const input = Readable.from(chunks, { objectMode: false });
  input.on('error', (err) => z.destroy(err));
  input.pipe(z);
  try {
    for await (const out of z as AsyncIterable<Buffer>) yield out;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code?.startsWith('Z_')) throw new InvalidRequestError(`${what} is not valid gzip (${e.message})`);
    throw err;
  } finally {
    input.destroy();
    z.destroy();
  }
}

async function* unzstd(chunks: AsyncIterable<Buffer>, what: string): AsyncGenerator<Buffer> {
  const out: Buffer[] = [];
  const d = new Decompress((chunk) => {
    if (chunk.length > 0) out.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
  });
  const push = (chunk: Uint8Array, final: boolean) => {
    try {
      d.push(chunk, final);
    } catch (err) {
      throw new InvalidRequestError(`${what} is not valid zstd (${(err as Error).message})`);
    }
  };
  for await (const chunk of chunks) {
    push(chunk, false);
    while (out.length > 0) yield out.shift()!;
  }
  push(new Uint8Array(0), true);
  while (out.length > 0) yield out.shift()!;
}

/** The zstd program on PATH, if any. */
function zstdProgram(): string | undefined {
  if (process.env.MOUNTGATE_ZSTD === 'js') return undefined;
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(delimiter)) {
    const path = join(dir, 'zstd');
    try {
      accessSync(path, fsConstants.X_OK);
      return path;
    } catch {
      // not here
    }
  }
  return undefined;
}

async function* unzstdProgram(program: string, chunks: AsyncIterable<Buffer>, what: string): AsyncGenerator<Buffer> {
  const child = spawn(program, ['-d', '-c', '-q'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-1000)));
  const exited = new Promise<number>((resolve) => child.once('close', (code, signal) => resolve(code ?? (signal ? 128 : 1))));
  const input = Readable.from(chunks, { objectMode: false });
  let inputError: Error | undefined;
  input.on('error', (err) => {
    inputError = err;
    child.kill('SIGKILL');
  });
  child.stdin!.on('error', () => undefined); // zstd stopped reading: its exit status tells why
  input.pipe(child.stdin!);
  try {
    for await (const out of child.stdout! as AsyncIterable<Buffer>) yield out;
    const code = await exited;
    if (inputError) throw inputError;
    if (code !== 0) throw new InvalidRequestError(`${what} is not valid zstd (${stderr.trim().replace(/^zstd: /, '') || `zstd exited ${code}`})`);
  } finally {
    input.destroy();
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

/** The uncompressed bytes of `chunks`, and how they were compressed. */
export async function decompressed(chunks: AsyncIterable<Uint8Array>, what: string): Promise<{ compression: Compression; chunks: AsyncIterable<Buffer> }> {
  const { head, all } = await peek(chunks, 6);
  const compression = sniffCompression(head, what);
  if (compression === 'gzip') return { compression, chunks: gunzip(all, what) };
  if (compression === 'zstd') {
    const program = zstdProgram();
    return { compression, chunks: program ? unzstdProgram(program, all, what) : unzstd(all, what) };
  }
  return { compression, chunks: all };
}
