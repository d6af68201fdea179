// Container images: oci:DIR[:TAG], oci-archive:FILE, docker-archive:FILE
// (what `podman save` writes) and podman:IMAGE (`podman save` as the user,
// streamed). An archive is read once, front to back, whatever order its blobs
// come in: JSON blobs are kept, every blob that is a layer is read as one
// while it streams by (hashed as a blob, and its uncompressed stream hashed
// for the diff ID). Then the manifest names the layers: every blob it uses is
// checked against its digest and every layer against its diff ID, and the
// layers are applied in order. The image config (Entrypoint, Cmd, Env,
// WorkingDir, User) comes back with the flattened manifest.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Manifest } from '../schema/types.generated.js';
import { InvalidRequestError, NotFoundError } from '../errors.js';
import { decompressed } from './decompress.js';
import { commandInput, counted, fileInput, type ArchiveInput } from './input.js';
import { LayerTree, readLayer, type LayerResult } from './layers.js';
import { readTar } from './tar.js';
import { objectsFromLayer, type ScanOptions } from './tarball.js';
import type { SplitRecord } from './tarsplit.js';
import type { ObjectProvider } from './upload.js';

export interface ImageConfig {
  Entrypoint?: string[];
  Cmd?: string[];
  Env?: string[];
  WorkingDir?: string;
  User?: string;
}

export interface ImportedImage {
  manifest: Manifest;
  config: ImageConfig;
  layers: { digest: string; diffId: string; entries: number; split?: SplitRecord[] }[];
  provider: ObjectProvider;
}

interface Blob {
  sha256: string;
  json?: Buffer;
  layer?: LayerResult;
  layerError?: Error;
}

const JSON_LIMIT = 4 << 20;

/** Reads one blob: its sha256, its bytes when it is JSON, its layer when it is one. */
async function readBlob(chunks: AsyncIterable<Buffer>, what: string, opts: ScanOptions): Promise<Blob> {
  const hash = createHash('sha256');
  const it = chunks[Symbol.asyncIterator]();
  // Every chunk is hashed as it is taken from the blob, by whichever reader takes it.
  const pull = async (): Promise<Buffer | undefined> => {
    const r = await it.next();
    if (r.done) return undefined;
    hash.update(r.value);
    return r.value;
  };
  const head: Buffer[] = [];
  let have = 0;
  for (let c; have < 512 && (c = await pull()); have += c.length) head.push(c);
  const first = Buffer.concat(head);
  let firstTaken = false;
  async function* rest(): AsyncGenerator<Buffer> {
    if (!firstTaken) {
      firstTaken = true;
      if (first.length > 0) yield first;
    }
    for (let c; (c = await pull()); ) yield c;
  }
  const blob: Blob = { sha256: '' };
  const isCompressed = (first[0] === 0x1f && first[1] === 0x8b) || (first.length >= 4 && first.readUInt32LE(0) === 0xfd2fb528);
  const isTar = first.length >= 262 && first.toString('latin1', 257, 262) === 'ustar';
  if (isCompressed || isTar) {
    try {
      const { chunks: plain } = await decompressed(rest(), what);
      blob.layer = await readLayer(plain, { what, ...opts, recordSplit: true });
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      blob.layerError = err as Error;
    }
  } else if (first[0] === 0x7b || first[0] === 0x5b) {
    const parts: Buffer[] = [];
    let n = 0;
    for await (const c of rest()) {
      n += c.length;
      if (n <= JSON_LIMIT) parts.push(c);
    }
    if (n <= JSON_LIMIT) blob.json = Buffer.concat(parts);
  }
  // Whatever no reader took is still part of the blob's digest.
  while (await pull());
  blob.sha256 = hash.digest('hex');
  return blob;
}

function parseJson(b: Buffer | undefined, what: string): any {
  if (!b) throw new InvalidRequestError(`${what} is missing or is not a JSON document`);
  try {
    return JSON.parse(b.toString('utf8'));
  } catch (err) {
    throw new InvalidRequestError(`${what} is not valid JSON: ${(err as Error).message}`);
  }
}

function digestHex(d: unknown, what: string): string {
  const m = typeof d === 'string' ? /^sha256:([0-9a-f]{64})$/.exec(d) : null;
  if (!m) throw new InvalidRequestError(`${what}: ${JSON.stringify(d)} is not a sha256 digest`);
  return m[1]!;
}

/** The layout: which blobs are the config and the layers, in order, and what each must hash to. */
interface Layout {
  config: { key: string; sha256: string };
  layers: { key: string; sha256?: string; diffId?: string }[];
}

function ociLayout(lookup: (key: string) => Blob | undefined, tag: string | undefined, what: string): Layout {
  const index = parseJson(lookup('index.json')?.json, `${what}: index.json`);
  const manifests = (index.manifests ?? []) as { digest: string; mediaType?: string; annotations?: Record<string, string> }[];
  const chosen = tag === undefined ? manifests : manifests.filter((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (chosen.length === 0) throw new NotFoundError(`${what} has no image${tag ? ` tagged ${tag}` : ''}`);
  if (chosen.length > 1) throw new InvalidRequestError(`${what} holds ${chosen.length} images; name one with :TAG`);
  const mHex = digestHex(chosen[0]!.digest, `${what}: index.json`);
  const mKey = `blobs/sha256/${mHex}`;
  const mBlob = lookup(mKey);
  if (!mBlob) throw new NotFoundError(`${what}: the manifest blob ${mHex} is not in the image`);
  if (mBlob.sha256 !== mHex) throw new InvalidRequestError(`${what}: blob ${mHex} (the manifest) hashes to ${mBlob.sha256}: it is corrupt`);
  const manifest = parseJson(mBlob.json, `${what}: manifest ${mHex}`);
  if (manifest.mediaType === 'application/vnd.oci.image.index.v1+json' || manifest.manifests) throw new InvalidRequestError(`${what}: ${mHex} is an index of several platforms; copy one platform's image first (skopeo copy)`);
  const cHex = digestHex(manifest.config?.digest, `${what}: manifest config`);
  return {
    config: { key: `blobs/sha256/${cHex}`, sha256: cHex },
    layers: ((manifest.layers ?? []) as { digest: string }[]).map((l) => {
      const hex = digestHex(l.digest, `${what}: manifest layer`);
      return { key: `blobs/sha256/${hex}`, sha256: hex };
    }),
  };
}

function dockerLayout(lookup: (key: string) => Blob | undefined, what: string): Layout {
  const list = parseJson(lookup('manifest.json')?.json, `${what}: manifest.json`) as { Config: string; Layers: string[] }[];
  if (!Array.isArray(list) || list.length !== 1) throw new InvalidRequestError(`${what}: manifest.json lists ${Array.isArray(list) ? list.length : 'no'} images; mountgate imports archives of exactly one`);
  const m = /([0-9a-f]{64})(?:\.json)?$/.exec(list[0]!.Config);
  return { config: { key: list[0]!.Config, sha256: m ? m[1]! : '' }, layers: list[0]!.Layers.map((key) => ({ key })) };
}

/** Applies the layout: digests checked, diff IDs checked, layers in order. */
function assemble(layout: Layout, lookup: (key: string) => Blob | undefined, name: string, what: string): Omit<ImportedImage, 'provider'> & { layerKeys: string[] } {
  const cBlob = lookup(layout.config.key);
  if (!cBlob) throw new NotFoundError(`${what}: the config blob ${layout.config.key} is not in the image`);
  if (layout.config.sha256 && cBlob.sha256 !== layout.config.sha256) throw new InvalidRequestError(`${what}: blob ${layout.config.key} (the config) hashes to sha256:${cBlob.sha256}, not its digest: it is corrupt`);
  const config = parseJson(cBlob.json, `${what}: config ${layout.config.key}`);
  const diffIds = (config.rootfs?.diff_ids ?? []) as string[];
  if (diffIds.length !== layout.layers.length) throw new InvalidRequestError(`${what}: the config lists ${diffIds.length} layer(s), the manifest ${layout.layers.length}`);
  const tree = new LayerTree();
  const layers: ImportedImage['layers'] = [];
  layout.layers.forEach((l, i) => {
    const blob = lookup(l.key);
    if (!blob) throw new NotFoundError(`${what}: layer blob ${l.key} is not in the image`);
    if (l.sha256 && blob.sha256 !== l.sha256) throw new InvalidRequestError(`${what}: layer blob ${l.key} hashes to sha256:${blob.sha256}, not its digest: it is corrupt`);
    if (!blob.layer) throw blob.layerError ?? new InvalidRequestError(`${what}: layer blob ${l.key} is not a tar archive`);
    if (blob.layer.diffId !== diffIds[i]) throw new InvalidRequestError(`${what}: layer ${i} (${l.key}) uncompresses to ${blob.layer.diffId}, but the config says ${diffIds[i]}: it is corrupt`);
    tree.apply(blob.layer.entries, `${what}: layer ${i}`);
    layers.push({ digest: `sha256:${blob.sha256}`, diffId: blob.layer.diffId, entries: blob.layer.entries.length, ...(blob.layer.split ? { split: blob.layer.split } : {}) });
  });
  const c = config.config ?? {};
  const imageConfig: ImageConfig = {};
  for (const k of ['Entrypoint', 'Cmd', 'Env', 'WorkingDir', 'User'] as const) if (c[k] !== undefined && c[k] !== null) imageConfig[k] = c[k];
  return { manifest: tree.manifest(name), config: imageConfig, layers, layerKeys: layout.layers.map((l) => l.key) };
}

/** A tar-format image archive (docker-archive or oci-archive), read once; the objects come from reading it again. */
async function importImageArchive(input: ArchiveInput, kind: 'docker' | 'oci', tag: string | undefined, name: string, opts: ScanOptions): Promise<ImportedImage> {
  if (!input.rereadable) throw new InvalidRequestError(`${input.what}: an image archive must be a file (or podman:IMAGE), not a pipe`);
  const blobs = new Map<string, Blob>();
  const links = new Map<string, string>();
  const norm = (n: Buffer) => n.toString('utf8').replace(/^(\.\/)+/, '').replace(/\/$/, '');
  const outer = readTar(counted(input.open(opts.signal), opts.onRead), { what: input.what });
  for (let e; (e = await outer.next()); ) {
    const key = norm(e.name);
    if (e.type === 'file') blobs.set(key, await readBlob(outer.data(), `${input.what}: ${key}`, opts));
    else if (e.type === 'symlink' || e.type === 'hardlink') links.set(key, e.linkName!.toString('utf8'));
  }
  const lookup = (key: string): Blob | undefined => {
    for (let k = key, hops = 0; hops < 8; hops++) {
      const b = blobs.get(k);
      if (b) return b;
      const t = links.get(k);
      if (t === undefined) return undefined;
      k = t.startsWith('../') ? t.slice(3) : join(k, '..', t);
    }
    return undefined;
  };
  const layout = kind === 'oci' ? ociLayout(lookup, tag, input.what) : dockerLayout(lookup, input.what);
  const image = assemble(layout, lookup, name, input.what);
  const provider: ObjectProvider = {
    async *objects(wanted) {
      // The layers' blobs, in the order the archive holds them.
      const byBlob = new Map<Blob, LayerResult>();
      for (const k of image.layerKeys) byBlob.set(lookup(k)!, lookup(k)!.layer!);
      const again = readTar(input.open(opts.signal), { what: input.what });
      for (let e; wanted.size > 0 && (e = await again.next()); ) {
        const blob = e.type === 'file' ? blobs.get(norm(e.name)) : undefined;
        const layer = blob && byBlob.get(blob);
        if (!layer) continue;
        const { chunks } = await decompressed(again.data(), `${input.what}: ${norm(e.name)}`);
        yield* objectsFromLayer(chunks, input.what, layer.fileDigests, wanted);
        // The rest of the blob (its end-of-archive blocks) is skipped by the next entry.
      }
    },
  };
  return { manifest: image.manifest, config: image.config, layers: image.layers, provider };
}

/** An OCI layout directory: each blob read from its own file. */
async function importOciDir(dir: string, tag: string | undefined, name: string, opts: ScanOptions): Promise<ImportedImage> {
  if (!existsSync(join(dir, 'oci-layout'))) throw new InvalidRequestError(`${dir} is not an OCI image layout (it has no oci-layout file)`);
  const cache = new Map<string, Blob | undefined>();
  const jsonBlob = (key: string): Blob | undefined => {
    if (cache.has(key)) return cache.get(key);
    const p = join(dir, key);
    let b: Blob | undefined;
    if (existsSync(p)) {
      const bytes = readFileSync(p);
      b = { sha256: createHash('sha256').update(bytes).digest('hex'), ...(bytes.length <= JSON_LIMIT ? { json: bytes } : {}) };
    }
    cache.set(key, b);
    return b;
  };
  const layout = ociLayout(jsonBlob, tag, dir);
  const blobs = [...new Set(layout.layers.map((l) => l.key))].filter((k) => existsSync(join(dir, k)));
  opts.onTotal?.(blobs.reduce((n, k) => n + statSync(join(dir, k)).size, 0));
  let before = 0;
  for (const key of blobs) {
    const p = join(dir, key);
    cache.set(key, await readBlob(counted(createReadStream(p, { highWaterMark: 1 << 20 }), (n) => opts.onRead?.(before + n)), `${dir}: ${key}`, opts));
    before += statSync(p).size;
  }
  const image = assemble(layout, (k) => cache.get(k) ?? jsonBlob(k), name, dir);
  const provider: ObjectProvider = {
    async *objects(wanted) {
      for (const key of new Set(image.layerKeys)) {
        if (wanted.size === 0) return;
        const { chunks } = await decompressed(createReadStream(join(dir, key), { highWaterMark: 1 << 20 }), `${dir}: ${key}`);
        yield* objectsFromLayer(chunks, dir, cache.get(key)!.layer!.fileDigests, wanted);
      }
    },
  };
  return { manifest: image.manifest, config: image.config, layers: image.layers, provider };
}

export const imageTransports = ['oci:', 'oci-archive:', 'docker-archive:', 'podman:'] as const;

export function isImageReference(source: string): boolean {
  return imageTransports.some((t) => source.startsWith(t));
}

/** The default image name of a reference: the tag's repository's last part, or the file's base name. */
export function imageName(source: string): string {
  const rest = source.slice(source.indexOf(':') + 1);
  const base = rest.split('/').filter(Boolean).pop() ?? 'image';
  return base.replace(/\.(tar|oci|docker)$/, '').replace(/[:@].*$/, '') || 'image';
}

export async function importImage(source: string, name: string, opts: ScanOptions = {}): Promise<ImportedImage> {
  if (source.startsWith('oci:')) {
    const rest = source.slice(4);
    const colon = rest.lastIndexOf(':');
    const [dir, tag] = colon > 0 && !existsSync(join(rest, 'oci-layout')) ? [rest.slice(0, colon), rest.slice(colon + 1)] : [rest, undefined];
    return importOciDir(dir, tag, name, opts);
  }
  if (source.startsWith('oci-archive:')) return importImageArchive(fileInput(source.slice(12)), 'oci', undefined, name, opts);
  if (source.startsWith('docker-archive:')) return importImageArchive(fileInput(source.slice(15)), 'docker', undefined, name, opts);
  if (source.startsWith('podman:')) {
    const ref = source.slice(7);
    if (!ref || ref.startsWith('-')) throw new InvalidRequestError(`podman:${ref}: name an image`);
    const podman = process.env.MOUNTGATE_PODMAN ?? 'podman';
    // To its standard output, with no -o: that is a socket (what Node's spawn
    // gives a child), and `-o /dev/stdout` makes podman open(2) it again,
    // which a socket refuses (ENXIO).
    return importImageArchive(commandInput(source, podman, ['save', '--format', 'docker-archive', ref]), 'docker', undefined, name, opts);
  }
  throw new InvalidRequestError(`${source}: not an image reference (${imageTransports.join(', ')})`);
}
