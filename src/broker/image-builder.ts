// Building an image from manifest bytes: parse and check the manifest, point
// every external file at its object (the broker decides backing paths, from
// the digests), write the composefs EROFS image, name it by its sha256. Pure;
// a build helper process runs it (build-helper.ts, from the pool of
// build-helpers.ts; ImageService queues the builds). What it learns that
// grows with the image (its objects, its device nodes) goes to the front
// packed or cut short (BuildResult), so reading it costs the front no long
// turn of its event loop.
import { createHash } from 'node:crypto';
import { fstatSync, readSync } from 'node:fs';
import { writeCheckedImage } from '../composefs/writer.js';
import { InvalidRequestError, LimitExceededError } from '../errors.js';
import { parseManifest, type CheckedManifest } from '../manifest/load.js';
import { byteKey, showText } from '../manifest/text.js';
import { shownDevices, type ImageFacts } from '../policy/images.js';
import { ObjectList } from '../store/object-list.js';
import { objectPath } from '../store/objects.js';

export interface BuiltImage {
  imageId: string;
  image: Uint8Array;
  name?: string;
  /** The caller's image this one is kept for, hidden (the manifest's keptFor). */
  keptFor?: string;
  facts: ImageFacts;
  /** Objects the image's files need, with their sizes. */
  objects: ObjectList;
}

/**
 * What a build helper says of a build, as JSON beside the image and the
 * packed object records (each in a sealed memfd): everything but the
 * image, with the objects' count. Its size does not grow with the image.
 */
export type BuildResult = Omit<BuiltImage, 'image' | 'objects'> & { objects: number };

/**
 * Points every external file at its object and collects what the policy
 * needs to know. A caller-supplied backing path other than the digest's is
 * refused: redirects into the store are the broker's to choose.
 */
export function prepareManifest(manifest: CheckedManifest): { manifest: CheckedManifest; facts: ImageFacts; objects: Record<string, number> } {
  const objects: Record<string, number> = {};
  const devices: string[] = [];
  let bytes = 0;
  const entries = manifest.entries.map((e, k) => {
    if (e.type === 'chardev' || e.type === 'blockdev') devices.push(showText(e.path));
    if (e.type !== 'file') return e;
    bytes += e.size;
    if (e.size === 0 || e.inline !== undefined) return e;
    if (!e.digest) throw new InvalidRequestError(`/entries/${k}: ${showText(e.path)} has ${e.size} bytes but neither a digest nor inline content`);
    const backing = objectPath(e.digest);
    if (e.backing !== undefined && byteKey(e.backing) !== backing) {
      throw new InvalidRequestError(`/entries/${k}: ${showText(e.path)} names backing "${showText(e.backing)}", but objects are stored by digest ("${backing}"): omit backing`);
    }
    const known = objects[e.digest];
    if (known !== undefined && known !== e.size) throw new InvalidRequestError(`/entries/${k}: digest ${e.digest} appears with sizes ${known} and ${e.size}`);
    objects[e.digest] = e.size;
    return { ...e, backing };
  });
  // The policy shows a few devices and counts the rest: 60k long paths would be 240 MB of facts for the front to read.
  const deviceFacts = devices.length > shownDevices ? { devices: devices.slice(0, shownDevices), deviceCount: devices.length } : { devices };
  // Still checked: only backing paths changed, each to its object's path (short ASCII, what the check allows).
  return { manifest: { ...manifest, entries } as CheckedManifest, facts: { entries: entries.length, bytes, ...deviceFacts }, objects };
}

/** Limits checked before the expensive work, so an oversized manifest costs little. */
export interface BuildLimits {
  maxEntries: number;
  /** Largest manifest read, in bytes (checked again from the fd's size before reading). */
  maxBytes: number;
}

/**
 * The bytes of a sealed memfd (a manifest the front checked), read by
 * position: the fd's offset is shared with its other holders. Synchronous:
 * for the build helper (the front reads a build's result off its loop).
 */
export function readManifestFd(fd: number, maxBytes: number): Buffer {
  const size = fstatSync(fd).size;
  if (size > maxBytes) throw new LimitExceededError(`the manifest is ${size} bytes; the policy allows at most ${maxBytes}`);
  const buf = Buffer.allocUnsafe(size);
  let at = 0;
  while (at < size) {
    const n = readSync(fd, buf, at, size - at, at);
    if (n === 0) break;
    at += n;
  }
  return buf.subarray(0, at);
}

export function buildImage(manifestBytes: Uint8Array, limits: BuildLimits): BuiltImage {
  const text = Buffer.from(manifestBytes.buffer, manifestBytes.byteOffset, manifestBytes.byteLength);
  const count = countEntries(text);
  if (count > limits.maxEntries) throw new LimitExceededError(`the image has ${count} entries; the policy allows at most ${limits.maxEntries}`);
  const prepared = prepareManifest(parseManifest(text));
  const image = writeCheckedImage(prepared.manifest);
  return {
    imageId: createHash('sha256').update(image).digest('hex'),
    image,
    ...(prepared.manifest.name ? { name: prepared.manifest.name } : {}),
    ...(prepared.manifest.keptFor ? { keptFor: prepared.manifest.keptFor } : {}),
    facts: prepared.facts,
    objects: ObjectList.pack(prepared.objects),
  };
}

/** Entries in a manifest, from a shallow parse (undefined shapes are left to the full check). */
function countEntries(text: Buffer): number {
  try {
    const doc = JSON.parse(text.toString('utf8')) as { entries?: unknown };
    return Array.isArray(doc.entries) ? doc.entries.length : 0;
  } catch {
    return 0; // not JSON: parseManifest reports it
  }
}
