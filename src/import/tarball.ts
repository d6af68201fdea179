// `mountgate image add FILE.tar[.gz|.zst]` and `-`: one layer tarball as an
// image. The archive is read once to build the manifest (every file hashed as
// it streams by, nothing written to disk); the contents the broker then asks
// for come from a second read of it (or from memory, for a pipe).
import type { Manifest } from '../schema/types.generated.js';
import { decompressed, type Compression } from './decompress.js';
import { counted, MemoryObjects, type ArchiveInput } from './input.js';
import { LayerTree, readLayer, type LayerLimits, type LayerResult } from './layers.js';
import { readTar } from './tar.js';
import type { ObjectContent, ObjectProvider } from './upload.js';
import type { ContentProver } from './prove.js';

export interface ScanOptions {
  limits?: LayerLimits;
  skipDevices?: boolean;
  /** For an input that cannot be read twice: at most this many bytes of contents kept in memory. */
  memoryLimit?: number;
  onEntry?: (entries: number, bytes: number) => void;
  /** The bytes of the source as stored (compressed or not) read so far by the scan, for progress. */
  onRead?: (bytes: number) => void;
  /** How many bytes the scan will read, when the source learns it only on the way (an oci: layout's layer blobs). */
  onTotal?: (bytes: number) => void;
  signal?: AbortSignal;
  /** Each layer's contents proven to the broker as it is read (ReadLayerOptions.prover). */
  prover?: () => ContentProver;
}

export interface ImportedTarball {
  manifest: Manifest;
  layer: LayerResult;
  compression: Compression;
  provider: ObjectProvider;
}

/** Contents of the wanted objects from a second read of a layer stream, in its order; `fileDigests` says which file is which. */
export async function* objectsFromLayer(chunks: AsyncIterable<Uint8Array>, what: string, fileDigests: (string | undefined)[], wanted: Map<string, number>): AsyncGenerator<ObjectContent> {
  const tar = readTar(chunks, { what });
  let file = 0;
  for (let e; wanted.size > 0 && (e = await tar.next()); ) {
    if (e.type !== 'file') continue;
    const digest = fileDigests[file++];
    if (digest === undefined || !wanted.has(digest)) continue;
    yield { digest, size: wanted.get(digest)!, chunks: tar.data() };
  }
}

export function memoryProvider(kept: MemoryObjects): ObjectProvider {
  return {
    async *objects(wanted) {
      for (const [digest, size] of [...wanted]) {
        const pieces = kept.get(digest);
        if (pieces) yield { digest, size, chunks: (async function* () { yield* pieces; })() };
      }
    },
  };
}

export async function importTarball(input: ArchiveInput, name: string, opts: ScanOptions = {}): Promise<ImportedTarball> {
  const kept = input.rereadable ? undefined : new MemoryObjects(opts.memoryLimit ?? 512 << 20, input.what);
  const { compression, chunks } = await decompressed(counted(input.open(opts.signal), opts.onRead), input.what);
  const layer = await readLayer(chunks, {
    what: input.what,
    recordSplit: true,
    ...(opts.limits ? { limits: opts.limits } : {}),
    ...(opts.skipDevices ? { skipDevices: true } : {}),
    ...(opts.onEntry ? { onEntry: opts.onEntry } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
    // What cannot be read again keeps its contents for the upload instead.
    ...(opts.prover && !kept ? { prover: opts.prover } : {}),
    ...(kept ? { onContent: (d: string, size: number, pieces: Buffer[]) => kept.keep(d, size, pieces) } : {}),
  });
  return kept ? tarballOf(input, name, layer, compression, memoryProvider(kept)) : tarballFromLayer(input, name, layer, compression, opts.signal);
}

/** The import of a rereadable archive from what a scan of it found (now, or an earlier one: src/import/scan-cache.ts): contents the broker asks for are read from it again. */
export function tarballFromLayer(input: ArchiveInput, name: string, layer: LayerResult, compression: Compression, signal?: AbortSignal): ImportedTarball {
  if (!input.rereadable) throw new Error('import: an archive that cannot be read again needs its contents kept from its scan');
  return tarballOf(input, name, layer, compression, {
    async *objects(wanted) {
      const again = await decompressed(input.open(signal), input.what);
      yield* objectsFromLayer(again.chunks, input.what, layer.fileDigests, wanted);
    },
  });
}

function tarballOf(input: ArchiveInput, name: string, layer: LayerResult, compression: Compression, provider: ObjectProvider): ImportedTarball {
  const tree = new LayerTree();
  tree.apply(layer.entries, input.what);
  return { manifest: tree.manifest(name), layer, compression, provider };
}
