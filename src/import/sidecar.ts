// What the client keeps beside an imported image (the broker's store holds
// only its tree): the image config, so that a run can do what the image says,
// and each layer's tar split, so that `image export-layer` can rebuild it.
//
// Kept per name, the user's name for the image at the broker, not per image
// id: the id is the digest of the flattened tree, and imports that flatten
// to the same tree (one layer or two; a tarball or a container image with
// its own Cmd) share it while their layers and configs differ. The broker
// keeps every name a user gives an image (each one user's name names one
// image: given to another, it moves, src/store/db.ts), so a record is good
// only while the broker lists its name for its image id; records the
// listing no longer shows are dropped by the next command that writes here.
//
// In $XDG_DATA_HOME/mountgate/images (~/.local/share by default):
//   names/KEY.json           the record of one name (KEY: the name, encoded)
//   names/KEY.NONCE.layers/  its layers: N.tarsplit (N from 0, the lowest),
//                            paths.json (a path in the image of each content)
//   ID.json, ID.layers/      a record of a client before names (read only as
//                            a fallback for the image ID, dropped with it)
//   lock                     flock'd by every writer, shared by export-layer
// A record is written under a fresh layer directory and renamed into place:
// a reader sees the old record with its layers or the new one with its.
import { closeSync, constants as fsConstants, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { listedNames } from '../client/image-ref.js';
import type { Manifest } from '../schema/types.generated.js';
import { MountgateError } from '../errors.js';
import { flock, LOCK_EX, LOCK_SH } from '../sys/syscalls.js';
import type { ImageConfig } from './oci.js';
import { encodeSplit, type SplitRecord } from './tarsplit.js';

export interface ImageSidecar {
  /** The name it is kept under (absent in a record from before names). */
  name?: string;
  /** The image the name was given to by the import (absent in a record from before names: its file name says). */
  imageId?: string;
  source: string;
  config?: ImageConfig;
  /** The hidden image kept for this one with the contents its layers need and it lacks (src/import/kept.ts). */
  kept?: string;
  /** Per layer, lowest first; `split` names its tar split file in the record's layer directory. */
  layers: { digest?: string; diffId: string; entries: number; split?: string }[];
  /** The record's layer directory, relative to names/ (absent in a record from before names: ID.layers). */
  layerDir?: string;
}

/** A record found for an image, with the absolute path of its layer directory. */
export interface FoundSidecar {
  sidecar: ImageSidecar;
  layerDir: string;
}

/** An image as the broker lists it (name: the one meant, or given last; names: all of them): the record of a name is the one that counts. */
export interface ListedImage {
  id: string;
  name?: string;
  names?: string[];
}

export function sidecarDir(): string {
  return join(process.env.XDG_DATA_HOME || join(homedir(), '.local', 'share'), 'mountgate', 'images');
}

const namesDir = () => join(sidecarDir(), 'names');

/**
 * A file name for an image name: letters, digits, _ and - as they are, every
 * other byte of its UTF-8 as %XX (so "." and "/" cannot make a path, and two
 * names never share a key); one too long for a file name (a name may have
 * 255 characters) is the sha256 of the name instead. The record holds the
 * name itself, and a lookup checks it.
 */
export function nameKey(name: string): string {
  const encoded = [...Buffer.from(name, 'utf8')].map((b) => (/[A-Za-z0-9_-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`)).join('');
  return encoded.length <= 160 ? encoded : `~${createHash('sha256').update(name).digest('hex')}`;
}

/**
 * Runs `fn` holding the flock of the directory (made when missing) until it
 * settles: exclusive for writers, shared for a reader that needs a record's
 * layer files to stay while it reads them.
 */
export async function withSidecarLock<T>(mode: 'shared' | 'exclusive', fn: () => Promise<T> | T): Promise<T> {
  mkdirSync(namesDir(), { recursive: true, mode: 0o700 });
  const lock = openSync(join(sidecarDir(), 'lock'), fsConstants.O_RDWR | fsConstants.O_CREAT, 0o600);
  try {
    flock(lock, mode === 'shared' ? LOCK_SH : LOCK_EX);
    return await fn();
  } finally {
    closeSync(lock); // and with it the lock
  }
}

function readJson(path: string): ImageSidecar | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    return JSON.parse(text) as ImageSidecar;
  } catch (err) {
    throw new CorruptRecordError(`${path} is not JSON (${(err as Error).message}); import the image again, or remove the file`);
  }
}

/** A record file that cannot be parsed (edited by hand: every write renames a whole file into place). */
class CorruptRecordError extends MountgateError {
  constructor(message: string) {
    super('InvalidRequest', message);
  }
}

/**
 * The record that says what the import named `image.name` kept for the
 * image: the name's record when it was kept for this very image, else, for
 * an image imported by a client from before names, the record of its id.
 */
export function readSidecar(image: ListedImage): FoundSidecar | undefined {
  if (image.name !== undefined) {
    const named = readJson(join(namesDir(), `${nameKey(image.name)}.json`));
    if (named && named.name === image.name && named.imageId === image.id && named.layerDir) return { sidecar: named, layerDir: join(namesDir(), named.layerDir) };
  }
  const legacy = readJson(join(sidecarDir(), `${image.id}.json`));
  return legacy && { sidecar: legacy, layerDir: join(sidecarDir(), `${image.id}.layers`) };
}

/** The records of names/, by key (the file name without .json); one that is no JSON (edited by hand) as an empty one, to be dropped. */
function records(): Map<string, Partial<ImageSidecar>> {
  const out = new Map<string, Partial<ImageSidecar>>();
  for (const f of readdirSync(namesDir())) {
    if (!f.endsWith('.json')) continue;
    let r: ImageSidecar | undefined;
    try {
      r = readJson(join(namesDir(), f));
    } catch (err) {
      if (!(err instanceof CorruptRecordError)) throw err;
    }
    out.set(f.slice(0, -5), r ?? {});
  }
  return out;
}

/**
 * Drops what no image of `listing` (the broker's, as it stands) is named by
 * any more: a record whose name the listing gives to no image or to another
 * image, a legacy record of an image no longer listed or now kept by name,
 * and layer directories no record names and temporary files (an import that
 * died before its rename: every writer holds the lock, so none is under way).
 * Call it holding the exclusive lock.
 */
function dropStale(listing: ListedImage[]): void {
  // Every name of every image: an image may have several, each with its record.
  const named = new Set(listing.flatMap((i) => listedNames(i).map((n) => `${i.id}\0${n}`)));
  const keep = new Set<string>();
  const byName = new Set<string>();
  for (const [key, r] of records()) {
    if (r.imageId !== undefined && r.name !== undefined && named.has(`${r.imageId}\0${r.name}`) && r.layerDir) {
      keep.add(r.layerDir);
      byName.add(r.imageId);
    } else {
      rmSync(join(namesDir(), `${key}.json`), { force: true });
    }
  }
  for (const f of readdirSync(namesDir())) if ((f.endsWith('.layers') && !keep.has(f)) || f.endsWith('.tmp')) rmSync(join(namesDir(), f), { recursive: true, force: true });
  const listed = new Set(listing.map((i) => i.id));
  for (const f of readdirSync(sidecarDir())) {
    const m = /^([0-9a-f]{64})\.(json|layers)$/.exec(f);
    if (m && (!listed.has(m[1]!) || byName.has(m[1]!))) rmSync(join(sidecarDir(), f), { recursive: true, force: true });
  }
}

/**
 * Keeps what `data.name` now means: the record and the layer splits of the
 * import that gave that name to `data.imageId`, replacing whatever the name
 * had. `listing` is the broker's, read under the lock (so it is fresher than
 * any other import's write here); when it does not give the name to this
 * image (another import of the name registered after this one), nothing is
 * kept and that is said by the return value.
 */
export function keepSidecar(
  data: Omit<ImageSidecar, 'layerDir' | 'layers'> & { name: string; imageId: string },
  layers: { digest?: string; diffId: string; entries: number; split?: SplitRecord[] }[],
  manifest: Manifest,
  listing: () => Promise<ListedImage[]>,
): Promise<{ kept: boolean; layers: ImageSidecar['layers'] }> {
  return withSidecarLock('exclusive', async () => {
    const now = await listing();
    dropStale(now);
    const shown = layers.map(({ split: _split, ...l }) => l);
    if (!now.some((i) => i.id === data.imageId && listedNames(i).includes(data.name))) return { kept: false, layers: shown };
    const key = nameKey(data.name);
    const dirName = `${key}.${randomBytes(8).toString('hex')}.layers`;
    const dir = join(namesDir(), dirName);
    mkdirSync(dir, { mode: 0o700 });
    const paths: Record<string, string | { base64: string }> = {};
    for (const e of manifest.entries) if (e.type === 'file' && 'digest' in e && e.digest && !(e.digest in paths)) paths[e.digest] = e.path;
    writeFileSync(join(dir, 'paths.json'), JSON.stringify(paths), { mode: 0o600 });
    const kept = layers.map(({ split, ...l }, k) => {
      if (!split) return l;
      writeFileSync(join(dir, `${k}.tarsplit`), encodeSplit(split), { mode: 0o600 });
      return { ...l, split: `${k}.tarsplit` };
    });
    const path = join(namesDir(), `${key}.json`);
    const old = readJson(path);
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify({ ...data, layers: kept, layerDir: dirName } satisfies ImageSidecar, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, path);
    if (old?.layerDir && old.layerDir !== dirName) rmSync(join(namesDir(), old.layerDir), { recursive: true, force: true });
    // The legacy record of this image is superseded by the name's.
    for (const suffix of ['.json', '.layers']) rmSync(join(sidecarDir(), `${data.imageId}${suffix}`), { recursive: true, force: true });
    return { kept: true, layers: kept };
  });
}

/**
 * After the broker removed images or gave a name to an image whose import
 * kept nothing here (`image add DIR`): drops what the broker's listing,
 * read under the lock, no longer names, and what was kept for `replaced`
 * (an image just registered anew under its name: the name's record and the
 * image's record from before names describe another import).
 */
export async function forgetSidecars(listing: () => Promise<ListedImage[]>, replaced?: ListedImage): Promise<void> {
  if (!existsSync(sidecarDir())) return;
  await withSidecarLock('exclusive', async () => {
    const now = await listing();
    if (replaced) {
      const path = join(namesDir(), `${nameKey(replaced.name ?? '')}.json`);
      if (replaced.name !== undefined && readJson(path)?.name === replaced.name) rmSync(path, { force: true });
      for (const suffix of ['.json', '.layers']) rmSync(join(sidecarDir(), `${replaced.id}${suffix}`), { recursive: true, force: true });
    }
    dropStale(now);
  });
}
