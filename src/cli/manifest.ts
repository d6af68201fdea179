// `mountgate manifest ...`: converting between composefs dump files and image
// manifests, with no broker involved.
import type { Command } from 'commander';
import { manifestFromDumpText, manifestToDump } from '../composefs/convert.js';
import { serializeDump } from '../composefs/dump.js';
import { manifestJson } from '../manifest/format.js';
import { parseManifest } from '../manifest/load.js';
import type { Manifest } from '../schema/types.generated.js';
import { readInputBytes, runAction, writeOutput } from './io.js';

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
        writeOutput(opts.output, manifestJson(m));
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
