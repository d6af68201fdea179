// The contents a layer of an imported image needs but the flattened image
// lacks (a later layer deleted or replaced the files that held them): kept
// as a hidden image of the same owner, tied to the flattened one (the
// manifest's keptFor), so that `image export-layer` can read them back. The
// store is content-addressed: the bytes are the objects themselves, stored
// once; the hidden image adds only its metadata, one file per content named
// by its digest as the store names objects (/ab/cdef...).
import type { Entry, Manifest } from '../schema/types.generated.js';
import type { SplitRecord } from './tarsplit.js';

/** Where a kept content lies in the hidden image, relative to its root. */
export function keptPath(digest: string): string {
  return `${digest.slice(0, 2)}/${digest.slice(2)}`;
}

/** Contents (digest -> size) the layers' files have and no file of the flattened manifest has. */
export function lostContents(splits: (SplitRecord[] | undefined)[], flattened: Manifest): Map<string, number> {
  const present = new Set<string>();
  for (const e of flattened.entries) if (e.type === 'file' && 'digest' in e && e.digest) present.add(e.digest);
  const lost = new Map<string, number>();
  for (const split of splits) {
    for (const r of split ?? []) if ('file' in r && r.file.digest && !present.has(r.file.digest)) lost.set(r.file.digest, r.file.size);
  }
  return lost;
}

/** The manifest of the hidden image holding `contents`, kept for image `keptFor`. */
export function keptManifest(contents: Map<string, number>, keptFor: string): Manifest {
  const meta = { uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 } };
  const entries: Entry[] = [{ path: '/', type: 'dir', mode: 0o555, ...meta }];
  const digests = [...contents.keys()].sort();
  let dir = '';
  for (const d of digests) {
    if (d.slice(0, 2) !== dir) {
      dir = d.slice(0, 2);
      entries.push({ path: `/${dir}`, type: 'dir', mode: 0o555, ...meta });
    }
    entries.push({ path: `/${keptPath(d)}`, type: 'file', mode: 0o444, ...meta, size: contents.get(d)!, digest: d });
  }
  return { version: 1, keptFor, entries };
}
