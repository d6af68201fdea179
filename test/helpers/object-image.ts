// A composefs image the executor can mount, for the tests that drive it
// directly: one external file (its object written into a store layout,
// objects/xx/rest, 0444) and whatever else the test adds, written with the
// broker's own writer.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeImage } from '../../src/composefs/writer.js';
import type { Entry } from '../../src/schema/types.generated.js';
import { FsVerityHasher } from '../../src/verity/fsverity.js';

export const imageMtime = { sec: 1700000000, nsec: 0 };

/** Writes `content`'s object under `objectsDir` and, at `image`, an image of "/" and "/f" (that object), then `more`. */
export function writeObjectImage(image: string, objectsDir: string, content: Buffer, more: Entry[] = []): void {
  const digest = new FsVerityHasher().update(content).digest().toString('hex');
  mkdirSync(join(objectsDir, digest.slice(0, 2)), { recursive: true, mode: 0o755 });
  writeFileSync(join(objectsDir, digest.slice(0, 2), digest.slice(2)), content, { mode: 0o444 });
  const mtime = imageMtime;
  writeFileSync(image, writeImage({
    version: 1,
    entries: [
      { path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime },
      { path: '/f', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size: content.length, digest, backing: `${digest.slice(0, 2)}/${digest.slice(2)}` },
      ...more,
    ],
  }));
}
