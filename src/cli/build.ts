// `mountgate image build`: a manifest or a dump to the bytes mkcomposefs
// writes. It is what a user runs on large trees, where the process's fixed
// costs count, so bin/mountgate hands a plain `image build` command line
// straight to `runBuildCommand` here, before commander and the rest of the CLI
// load; any command line it does not fully understand (help, an unknown or
// missing option) goes to the full CLI, which parses it as it always did.
import { readDump } from '../composefs/dump-tree.js';
import type { ImageTree } from '../composefs/tree.js';
import { imageTree, writeTree, type ImageInput } from '../composefs/writer.js';
import { InvalidManifestError } from '../manifest/errors.js';
import { inputFileSize, readInputBytes, runAction, writeOutput } from './io.js';

export interface BuildOptions {
  output: string;
  minVersion?: string;
  maxVersion?: string;
  fromDump?: boolean;
  lenient?: boolean;
}

function versionOption(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value)) throw new InvalidManifestError(`${flag} must be a number, not "${value}"`);
  return Number(value);
}

/** As mkcomposefs: once either version is given, the other defaults to 0. */
function versions(opts: BuildOptions): { minVersion?: number; maxVersion?: number } {
  const min = versionOption(opts.minVersion, '--min-version');
  const max = versionOption(opts.maxVersion, '--max-version');
  if (min === undefined && max === undefined) return {};
  const minVersion = min ?? 0;
  return { minVersion, maxVersion: Math.max(minVersion, max ?? 0) };
}

/**
 * The command's body: read, check, write the image (nothing is written
 * unless the whole image is built). The schema's validators and the manifest
 * converter are loaded only when needed: for a manifest, or for a dump the
 * direct path declines. Each stage's input is let go once the next has what
 * it needs, so the peak holds the tree and the image, not also the manifest
 * or its text.
 */
export async function buildImageFile(file: string, opts: BuildOptions): Promise<void> {
  if (opts.output === '-' && process.stdout.isTTY) throw new Error('standard output is a terminal: refusing to write an image there');
  let tree: ImageTree;
  // The input's problems first, then the options'.
  if (opts.fromDump) {
    const strict = !opts.lenient;
    const read = readDump(readInputBytes(file), strict);
    let input: ImageInput | undefined = 'source' in read ? read : { manifest: (await import('../composefs/convert.js')).manifestFromParsedDump(read.data, read.dump, { strict }), consume: true };
    tree = imageTree(input, versions(opts));
    input = undefined;
  } else {
    // A large manifest's entries are checked on a worker, started first so that its start overlaps the reading;
    // it reads the text from memory both threads share.
    const { CheckAhead, CHECK_AHEAD_MIN_BYTES } = await import('./check-ahead.js');
    const size = inputFileSize(file);
    let ahead = size !== undefined && size >= CHECK_AHEAD_MIN_BYTES ? new CheckAhead() : undefined;
    try {
      let bytes: Buffer | undefined = readInputBytes(file);
      const [{ manifestTextBytes }, { manifestTextTree }] = await Promise.all([import('../manifest/load.js'), import('../composefs/manifest-tree.js')]);
      if (ahead === undefined && bytes.length >= CHECK_AHEAD_MIN_BYTES) ahead = new CheckAhead();
      let text: Buffer | undefined = manifestTextBytes(bytes, ahead !== undefined);
      bytes = undefined; // (the same bytes when they are ASCII and not shared)
      ahead?.share(text);
      let json: string | undefined = text.toString('latin1');
      text = undefined; // the build need not hold the bytes as well as their text
      // The versions are read once the manifest is found sound: its problems come first.
      tree = manifestTextTree(json, () => versions(opts), ahead);
      json = undefined; // not held while the image is written
    } finally {
      ahead?.stop();
    }
  }
  writeOutput(opts.output, writeTree(tree));
}

const valueOptions: Record<string, 'output' | 'minVersion' | 'maxVersion'> = {
  '-o': 'output',
  '--output': 'output',
  '--min-version': 'minVersion',
  '--max-version': 'maxVersion',
};
const flagOptions: Record<string, 'fromDump' | 'lenient'> = { '--from-dump': 'fromDump', '--lenient': 'lenient' };

/**
 * The input and options of the arguments after `image build`, read the way
 * commander reads them for this command; undefined for anything else.
 */
export function parseBuildArguments(args: readonly string[]): { input: string; opts: BuildOptions } | undefined {
  let input: string | undefined;
  const opts: Partial<BuildOptions> = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    if (valueOptions[name] !== undefined) {
      const value = eq > 0 ? arg.slice(eq + 1) : args[++i];
      if (value === undefined) return undefined;
      opts[valueOptions[name]] = value;
    } else if (flagOptions[arg] !== undefined) {
      opts[flagOptions[arg]] = true;
    } else if (arg === '-' || !arg.startsWith('-')) {
      if (input !== undefined) return undefined;
      input = arg;
    } else {
      return undefined;
    }
  }
  if (input === undefined || opts.output === undefined) return undefined;
  return { input, opts: opts as BuildOptions };
}

/** Runs `image build` from the arguments after it; false when the full CLI must parse them. */
export async function runBuildCommand(args: readonly string[]): Promise<boolean> {
  const parsed = parseBuildArguments(args);
  if (!parsed) return false;
  await runAction(buildImageFile)(parsed.input, parsed.opts);
  return true;
}
