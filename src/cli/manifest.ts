// `mountgate manifest ...`: converting between composefs dump files and image
// manifests, with no broker involved. Also the small helpers the image
// commands share: reading FILE or "-", writing -o FILE or stdout, and turning
// errors into "mountgate: <message>" with exit code 3 for invalid input.
import { readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { manifestFromDumpText, manifestToDump } from '../composefs/convert.js';
import { serializeDump } from '../composefs/dump.js';
import { exitCodes } from '../errors.js';
import { InvalidManifestError, parseManifest } from '../manifest/load.js';
import type { Manifest } from '../schema/types.generated.js';

/** Reads a whole file, or stdin for "-". */
export function readInputBytes(file: string): Buffer {
  try {
    return file === '-' ? readFileSync(0) : readFileSync(file);
  } catch (err) {
    throw new Error(`cannot read ${file === '-' ? 'standard input' : file}: ${(err as Error).message}`);
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

/** Runs a command body; prints "mountgate: ..." and sets the exit code on failure. */
export function runAction<A extends unknown[]>(body: (...args: A) => void): (...args: A) => void {
  return (...args: A) => {
    try {
      body(...args);
    } catch (err) {
      const invalid = err instanceof InvalidManifestError;
      process.stderr.write(`mountgate: ${(err as Error).message}\n`);
      process.exitCode = invalid ? exitCodes.InvalidRequest : exitCodes.Internal;
    }
  };
}

/**
 * A manifest as JSON text: one entry per line, so a large manifest stays
 * readable and diffs line by line.
 */
export function formatManifest(m: Manifest): string {
  const head: Record<string, unknown> = { version: m.version };
  if (m.name !== undefined) head.name = m.name;
  const lines = m.entries.map((e) => '    ' + JSON.stringify(e));
  const headText = JSON.stringify(head, null, 2).slice(0, -2);
  return `${headText},\n  "entries": [\n${lines.join(',\n')}\n  ]\n}\n`;
}

export function loadManifestFile(file: string): Manifest {
  return parseManifest(readInputBytes(file));
}

interface FromDumpOptions {
  output?: string;
  lenient?: boolean;
  name?: string;
}

export function register(program: Command): void {
  const manifest = program.command('manifest').description('Convert between composefs dump files and image manifests (no broker involved).');

  manifest
    .command('from-dump')
    .description('Convert a composefs dump (composefs-dump(5)) to a manifest.')
    .argument('<file>', 'the dump file, or - for standard input')
    .option('-o, --output <file>', 'write the manifest here instead of standard output')
    .option('--lenient', 'accept what mkcomposefs tolerates: no final newline, a symlink SIZE that is not its length, RDEV on non-devices')
    .option('--name <name>', 'the "name" of the manifest')
    .addHelpText(
      'after',
      `
The conversion is lossless: "manifest to-dump" gives back the same text.

Example:
  composefs-info dump image.cfs | mountgate manifest from-dump - -o image.json`,
    )
    .action(
      runAction((file: string, opts: FromDumpOptions) => {
        const m = manifestFromDumpText(readInputBytes(file), { strict: !opts.lenient, ...(opts.name ? { name: opts.name } : {}) });
        writeOutput(opts.output, formatManifest(m));
      }),
    );

  manifest
    .command('to-dump')
    .description('Convert a manifest to a composefs dump, as mkcomposefs --from-file reads it.')
    .argument('<file>', 'the manifest, or - for standard input')
    .option('-o, --output <file>', 'write the dump here instead of standard output')
    .addHelpText(
      'after',
      `
Example:
  mountgate manifest to-dump image.json | mkcomposefs --from-file - image.cfs`,
    )
    .action(
      runAction((file: string, opts: { output?: string }) => {
        writeOutput(opts.output, serializeDump(manifestToDump(loadManifestFile(file))));
      }),
    );
}
