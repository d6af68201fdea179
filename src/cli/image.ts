// `mountgate image ...`: building a composefs image from a manifest (what
// mkcomposefs does, byte for byte, without a broker), and looking inside one.
import type { Command } from 'commander';
import { serializeDump } from '../composefs/dump.js';
import { imageToDumpEntries, inspectImage, type ImageSummary } from '../composefs/reader.js';
import { buildImageFile } from './build.js';
import { readInputBytes, runAction, writeOutput } from './io.js';

function describe(s: ImageSummary): string {
  const types = Object.entries(s.byType)
    .sort()
    .map(([t, n]) => `${n} ${t}`)
    .join(', ');
  return [
    `composefs image, format version ${s.composefsVersion}${s.hasAcl ? ', with POSIX ACLs' : ''}`,
    `size:        ${s.size} bytes (${s.blocks} blocks of ${s.blockSize})`,
    `entries:     ${s.entries} (${types}${s.hardlinks ? `, ${s.hardlinks} hardlinks` : ''})`,
    `files:       ${s.inlineFiles} inline, ${s.externalFiles} in the object store`,
    `inodes:      ${s.inodes} (including the 256 whiteouts that hide the store's fan-out), root nid ${s.rootNid}`,
    `build time:  ${s.buildTime.sec}.${s.buildTime.nsec} (the oldest mtime)`,
  ].join('\n');
}

export function register(program: Command): void {
  const image = program.command('image').description('Build composefs images and look inside them (no broker involved).');

  image
    .command('build')
    .description('Build the EROFS composefs image of a manifest, byte-identical to mkcomposefs.')
    .argument('<manifest>', 'the manifest (or, with --from-dump, a dump file), or - for standard input')
    .requiredOption('-o, --output <image>', 'where to write the image (- for standard output)')
    .option('--min-version <n>', 'lowest composefs format version (default 0)')
    .option('--max-version <n>', 'highest composefs format version (default 1; used only for whiteouts)')
    .option('--from-dump', 'the input is a composefs dump, as for mkcomposefs --from-file')
    .option('--lenient', 'with --from-dump: accept what mkcomposefs tolerates')
    .addHelpText(
      'after',
      `
Nothing is written unless the whole image is built.

Examples:
  mountgate image build image.json -o image.cfs
  mountgate image build --from-dump tree.dump -o image.cfs --min-version 1 --max-version 1`,
    )
    .action(
      runAction(buildImageFile),
    );

  image
    .command('inspect')
    .description('Summarize an image: format version, size, entries by type.')
    .argument('<image>', 'the image file, or - for standard input')
    .option('--json', 'print the summary as JSON')
    .addHelpText(
      'after',
      `
Example:
  mountgate image inspect image.cfs --json`,
    )
    .action(
      runAction((file: string, opts: { json?: boolean }) => {
        const summary = inspectImage(readInputBytes(file));
        process.stdout.write(opts.json ? `${JSON.stringify(summary, null, 2)}\n` : `${describe(summary)}\n`);
      }),
    );

  image
    .command('to-dump')
    .description('Print the composefs dump of an image, as composefs-info dump does.')
    .argument('<image>', 'the image file, or - for standard input')
    .option('-o, --output <file>', 'write the dump here instead of standard output')
    .addHelpText(
      'after',
      `
Example:
  mountgate image to-dump image.cfs | mountgate manifest from-dump - -o image.json`,
    )
    .action(
      runAction((file: string, opts: { output?: string }) => {
        writeOutput(opts.output, serializeDump(imageToDumpEntries(readInputBytes(file))));
      }),
    );
}

