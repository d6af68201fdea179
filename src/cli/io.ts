// The small helpers the file commands share (manifest, image): reading FILE
// or "-", writing -o FILE or stdout whole or not at all, and turning errors
// into "mountgate: <message>" with exit code 3 for invalid input.
import { readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { exitCodes } from '../errors.js';
import { InvalidManifestError } from '../manifest/errors.js';

/** Reads a whole file, or stdin for "-". */
export function readInputBytes(file: string): Buffer {
  try {
    return file === '-' ? readFileSync(0) : readFileSync(file);
  } catch (err) {
    throw new Error(`cannot read ${file === '-' ? 'standard input' : file}: ${(err as Error).message}`);
  }
}

/** The size of a regular file, else undefined (stdin, a pipe, a file that cannot be read: its reading says why). */
export function inputFileSize(file: string): number | undefined {
  if (file === '-') return undefined;
  try {
    const st = statSync(file);
    return st.isFile() ? st.size : undefined;
  } catch {
    return undefined;
  }
}

/** Writes to a file (whole or not at all: through a temporary name) or to stdout. */
export function writeOutput(file: string | undefined, data: Buffer | string): void {
  if (file === undefined || file === '-') {
    process.stdout.write(data);
    return;
  }
  const temporary = `${file}.tmp-${process.pid}`;
  try {
    writeFileSync(temporary, data);
    renameSync(temporary, file);
  } catch (err) {
    try {
      unlinkSync(temporary);
    } catch {
      // nothing was written
    }
    throw new Error(`cannot write ${file}: ${(err as Error).message}`);
  }
}

/** Runs a command body (returning or not a promise); prints "mountgate: ..." and sets the exit code on failure. */
export function runAction<A extends unknown[]>(body: (...args: A) => void | Promise<void>): (...args: A) => void | Promise<void> {
  const fail = (err: unknown): void => {
    const invalid = err instanceof InvalidManifestError;
    process.stderr.write(`mountgate: ${(err as Error).message}\n`);
    process.exitCode = invalid ? exitCodes.InvalidRequest : exitCodes.Internal;
  };
  return (...args: A) => {
    try {
      const done = body(...args);
      if (done instanceof Promise) return done.catch(fail);
    } catch (err) {
      fail(err);
    }
    return undefined;
  };
}
