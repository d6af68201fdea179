// What the client keeps beside an imported image (the broker's store holds
// only its tree): the image config, so that a run can do what the image says,
// and where each layer came from. One JSON file per image id, in the user's
// data directory ($XDG_DATA_HOME/mountgate/images, ~/.local/share by default),
// written whole or not at all.
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Manifest } from '../schema/types.generated.js';
import type { ImageConfig } from './oci.js';
import { encodeSplit, type SplitRecord } from './tarsplit.js';

export interface ImageSidecar {
  source: string;
  config?: ImageConfig;
  /** The hidden image kept for this one with the contents its layers need and it lacks (src/import/kept.ts). */
  kept?: string;
  /** Per layer, lowest first; `split` names its tar split file in the image's layer directory. */
  layers: { digest?: string; diffId: string; entries: number; split?: string }[];
}

export function sidecarDir(): string {
  return join(process.env.XDG_DATA_HOME || join(homedir(), '.local', 'share'), 'mountgate', 'images');
}

export function writeSidecar(imageId: string, data: ImageSidecar): string {
  const dir = sidecarDir();
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, `${imageId}.json`);
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(data, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, path);
  return path;
}

export function readSidecar(imageId: string): ImageSidecar | undefined {
  try {
    return JSON.parse(readFileSync(join(sidecarDir(), `${imageId}.json`), 'utf8')) as ImageSidecar;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** The directory of an image's layer splits and the map of where its contents are. */
export function layerDir(imageId: string): string {
  return join(sidecarDir(), `${imageId}.layers`);
}

/**
 * Keeps each layer's tar split (N.tarsplit, N from 0, the lowest) and, in
 * paths.json, one path in the flattened image of every content digest, so
 * that `image export-layer` can read the contents back through a mount.
 * Returns the split file names, one per layer (undefined where none).
 */
export function writeLayerSplits(imageId: string, splits: (SplitRecord[] | undefined)[], manifest: Manifest): (string | undefined)[] {
  const dir = layerDir(imageId);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const paths: Record<string, string | { base64: string }> = {};
  for (const e of manifest.entries) if (e.type === 'file' && 'digest' in e && e.digest && !(e.digest in paths)) paths[e.digest] = e.path;
  writeFileSync(join(dir, 'paths.json'), JSON.stringify(paths), { mode: 0o600 });
  return splits.map((split, k) => {
    if (!split) return undefined;
    const name = `${k}.tarsplit`;
    writeFileSync(join(dir, name), encodeSplit(split), { mode: 0o600 });
    return name;
  });
}
