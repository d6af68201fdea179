// What the client keeps beside an imported image (the broker's store holds
// only its tree): the image config, so that a run can do what the image says,
// and where each layer came from. One JSON file per image id, in the user's
// data directory ($XDG_DATA_HOME/mountgate/images, ~/.local/share by default),
// written whole or not at all.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { ImageConfig } from './oci.js';

export interface ImageSidecar {
  source: string;
  config?: ImageConfig;
  layers: { digest?: string; diffId: string; entries: number }[];
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
