// Layers into one tree, and the tree into a manifest. A layer is read once,
// streaming: each regular file's contents are hashed (fs-verity, the name of
// its object in the store) as they go by and then dropped, and the whole
// uncompressed stream is hashed too (sha256: the layer's diff ID). Layers
// apply in order as overlayfs and the OCI image spec say: `.wh.NAME` removes
// NAME of the layers below, `.wh..wh..opq` empties its directory of them, a
// directory over a directory keeps what is inside. A name that goes through
// anything but a directory, "..", an absolute name, a hardlink to something
// not there yet, a duplicate entry or a device node is refused, naming it.
import { createHash } from 'node:crypto';
import type { Entry, Manifest } from '../schema/types.generated.js';
import { InvalidRequestError } from '../errors.js';
import { byteText, escapeBytes } from '../manifest/text.js';
import { validateManifest } from '../manifest/load.js';
import { FsVerityHasher } from '../verity/fsverity.js';
import { PROVE_AT_MOST, type ContentProver } from './prove.js';
import { readTar, type SplitSink, type TarEntry } from './tar.js';
import { TarSplitRecorder, type SplitRecord } from './tarsplit.js';

type Kind = 'dir' | 'file' | 'symlink' | 'fifo' | 'whiteout';

interface Inode {
  kind: Kind;
  mode: number;
  uid: number;
  gid: number;
  mtime: { sec: number; nsec: number };
  xattrs: [Buffer, Buffer][];
  size: number;
  digest?: string;
  target?: Buffer;
}

interface Node {
  inode: Inode;
  /** Directories only: name (latin1 of its bytes, so string order is byte order) -> node. */
  children?: Map<string, Node>;
}

/** One entry of a layer, as it applies to the tree. */
export interface LayerEntry {
  path: Buffer[];
  /** A whiteout: remove `path`; an opaque marker: empty the directory `path` of what lower layers put there. */
  op: 'add' | 'hardlink' | 'whiteout' | 'opaque';
  inode?: Inode;
  linkTarget?: Buffer[];
}

export interface LayerLimits {
  maxEntries: number;
  maxBytes: number;
}

export interface ReadLayerOptions {
  what: string;
  limits?: LayerLimits;
  /** Device nodes are dropped (and counted) instead of refused. */
  skipDevices?: boolean;
  split?: SplitSink;
  /** Keep what rebuilds the layer's tar stream byte for byte (LayerResult.split; see tarsplit.ts). */
  recordSplit?: boolean;
  /** Called with each regular file's digest and its content pieces (to keep them, when the input cannot be read again). */
  onContent?: (digest: string, size: number, pieces: Buffer[]) => void;
  /** Called after every entry. */
  onEntry?: (entries: number, bytes: number) => void;
  signal?: AbortSignal;
  /**
   * Has the broker hash the contents (ProveObjects) as the layer is read,
   * instead of hashing them here: a prover for this layer. Contents of at
   * most PROVE_AT_MOST bytes go to it; bigger ones are hashed here and
   * uploaded after AddImage.
   */
  prover?: () => ContentProver;
}

export interface LayerResult {
  entries: LayerEntry[];
  /** The digest of every regular file with content, in archive order (for reading the archive again). */
  fileDigests: (string | undefined)[];
  /** sha256 of the uncompressed archive, "sha256:..." */
  diffId: string;
  /** Uncompressed bytes. */
  bytes: number;
  contentBytes: number;
  skippedDevices: number;
  /** PAX keys that were present but are not kept (e.g. SCHILY.acl.access), with a count. */
  ignored: Map<string, number>;
  /** With recordSplit: the layer's tar split. */
  split?: SplitRecord[];
}

const SLASH = 0x2f;

/** A tar name as components: "./a/b/" -> [a, b]; "." -> [] (the root). */
export function nameComponents(name: Buffer, what: string): Buffer[] {
  if (name.length > 0 && name[0] === SLASH) throw new InvalidRequestError(`${what}: "${escapeBytes(name)}" is an absolute name; a layer's names are relative to its root`);
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= name.length; i++) {
    if (i < name.length && name[i] !== SLASH) continue;
    const part = name.subarray(start, i);
    start = i + 1;
    if (part.length === 0 || (part.length === 1 && part[0] === 0x2e)) continue;
    if (part.length === 2 && part[0] === 0x2e && part[1] === 0x2e) throw new InvalidRequestError(`${what}: "${escapeBytes(name)}" has a ".." component, which would leave the image`);
    parts.push(part);
  }
  return parts;
}

const WH = Buffer.from('.wh.');
const OPAQUE = Buffer.from('.wh..wh..opq');
const WH_META = Buffer.from('.wh..wh.');

function show(path: Buffer[]): string {
  return `/${path.map((p) => escapeBytes(p)).join('/')}`;
}

async function hashContent(chunks: AsyncIterable<Buffer>, keep: boolean, signal?: AbortSignal): Promise<{ digest: string; size: number; pieces: Buffer[] }> {
  const hasher = new FsVerityHasher();
  const pieces: Buffer[] = [];
  let size = 0;
  for await (const c of chunks) {
    signal?.throwIfAborted();
    hasher.update(c);
    size += c.length;
    if (keep) pieces.push(c);
  }
  return { digest: hasher.digest().toString('hex'), size, pieces };
}

/** Reads one uncompressed layer archive into its entries, hashing every file. */
export async function readLayer(chunks: AsyncIterable<Uint8Array>, opts: ReadLayerOptions): Promise<LayerResult> {
  const diff = createHash('sha256');
  const recorder = opts.recordSplit ? new TarSplitRecorder() : undefined;
  const sink: SplitSink | undefined = recorder && opts.split
    ? { raw: (b) => { recorder.raw(b); opts.split!.raw(b); }, content: (e, n) => { recorder.content(e, n); opts.split!.content(e, n); } }
    : recorder ?? opts.split;
  const tar = readTar(chunks, { what: opts.what, tap: (b) => diff.update(b), ...(sink ? { split: sink } : {}) });
  const entries: LayerEntry[] = [];
  const fileDigests: (string | undefined)[] = [];
  const ignored = new Map<string, number>();
  let contentBytes = 0;
  let skippedDevices = 0;
  const prover = opts.prover?.();
  /** Files whose digest the prover answers at the end: where it goes. */
  const proved: { file: number; inode?: { digest?: string } }[] = [];
  try {
    for (let e: TarEntry | undefined; (e = await tar.next()); ) {
      opts.signal?.throwIfAborted();
      const at = `${opts.what}: "${escapeBytes(e.name)}"`;
      const path = nameComponents(e.name, opts.what);
      for (const k of e.ignored) ignored.set(k, (ignored.get(k) ?? 0) + 1);
      if (opts.limits && entries.length >= opts.limits.maxEntries) throw new InvalidRequestError(`${opts.what} has more than ${opts.limits.maxEntries} entries, the most an image may have`);
      const base = { mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime, xattrs: e.xattrs, size: 0 };
      const last = path.at(-1);
      if (e.type === 'file') {
        const byProver = prover !== undefined && e.size > 0 && e.size <= PROVE_AT_MOST;
        // Proven: spooled for the broker, its digest filled in once it answers.
        const { digest, size, pieces } = byProver ? { digest: '', size: e.size, pieces: [] } : await hashContent(tar.data(), Boolean(opts.onContent), opts.signal);
        if (byProver) proved[await prover.add(e.size, tar.data(), opts.signal)] = { file: fileDigests.length };
        if (size !== e.size) throw new Error(`tar reader: ${at} gave ${size} bytes for a file of ${e.size}`);
        contentBytes += size;
        if (opts.limits && contentBytes > opts.limits.maxBytes) throw new InvalidRequestError(`${opts.what} holds more than ${opts.limits.maxBytes} bytes of file contents, the most the policy lets you store`);
        fileDigests.push(size > 0 ? digest : undefined);
        if (size > 0 && !byProver) opts.onContent?.(digest, size, pieces);
        if (last && last.equals(OPAQUE)) {
          entries.push({ path: path.slice(0, -1), op: 'opaque' });
        } else if (last && last.subarray(0, WH_META.length).equals(WH_META)) {
          // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not part of the tree
        } else if (last && last.subarray(0, WH.length).equals(WH)) {
          const hidden = last.subarray(WH.length);
          if (hidden.length === 0 || hidden.equals(Buffer.from('.')) || hidden.equals(Buffer.from('..'))) throw new InvalidRequestError(`${at} is a whiteout that names no file of its directory`);
          entries.push({ path: [...path.slice(0, -1), hidden], op: 'whiteout' });
        } else {
          const inode = { ...base, kind: 'file' as const, size, ...(size > 0 ? { digest } : {}) };
          if (byProver) proved[proved.length - 1]!.inode = inode;
          entries.push({ path, op: 'add', inode });
        }
      } else if (e.type === 'dir') {
        entries.push({ path, op: 'add', inode: { ...base, kind: 'dir' } });
      } else if (e.type === 'symlink') {
        if (!e.linkName || e.linkName.length === 0) throw new InvalidRequestError(`${at} is a symlink without a target`);
        entries.push({ path, op: 'add', inode: { ...base, kind: 'symlink', target: e.linkName } });
      } else if (e.type === 'hardlink') {
        entries.push({ path, op: 'hardlink', linkTarget: nameComponents(e.linkName ?? Buffer.alloc(0), opts.what) });
      } else if (e.type === 'fifo') {
        entries.push({ path, op: 'add', inode: { ...base, kind: 'fifo' } });
      } else if (e.type === 'chardev' && e.devMajor === 0 && e.devMinor === 0) {
        entries.push({ path, op: 'add', inode: { ...base, kind: 'whiteout' } });
      } else if (opts.skipDevices) {
        skippedDevices++;
      } else {
        throw new InvalidRequestError(`${at} is a device node (${e.type} ${e.devMajor}:${e.devMinor}); images cannot hold device nodes that can be mounted (--skip-devices drops them)`);
      }
      opts.onEntry?.(entries.length, tar.position);
    }
  } catch (err) {
    await prover?.abort();
    throw err;
  }
  if (prover) {
    const digests = await prover.finish();
    proved.forEach((p, k) => {
      fileDigests[p.file] = digests[k];
      if (p.inode) p.inode.digest = digests[k];
    });
  }
  return { entries, fileDigests, diffId: `sha256:${diff.digest('hex')}`, bytes: tar.position, contentBytes, skippedDevices, ignored, ...(recorder ? { split: recorder.finish(fileDigests) } : {}) };
}

const key = (b: Buffer) => b.toString('latin1');

/** The flattened tree of any number of layers. */
export class LayerTree {
  private readonly root: Node = { inode: { kind: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 }, xattrs: [], size: 0 }, children: new Map() };

  /** The node at `path`, or undefined; `what` names the entry in a refusal when a component is not a directory. */
  private lookup(path: Buffer[], what: string): Node | undefined {
    let node = this.root;
    for (let i = 0; i < path.length; i++) {
      if (!node.children) throw new InvalidRequestError(`${what}: ${show(path)} lies under ${show(path.slice(0, i))}, which is a ${node.inode.kind}, not a directory`);
      const child = node.children.get(key(path[i]!));
      if (!child) return undefined;
      node = child;
    }
    return node;
  }

  /** The directory that holds `path`, made (0755, root) where missing. */
  private parentOf(path: Buffer[], what: string): Map<string, Node> {
    let node = this.root;
    for (let i = 0; i < path.length - 1; i++) {
      if (!node.children) throw new InvalidRequestError(`${what}: ${show(path)} lies under ${show(path.slice(0, i))}, which is a ${node.inode.kind}, not a directory`);
      let child = node.children.get(key(path[i]!));
      if (!child) {
        child = { inode: { kind: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 }, xattrs: [], size: 0 }, children: new Map() };
        node.children.set(key(path[i]!), child);
      }
      node = child;
    }
    if (!node.children) throw new InvalidRequestError(`${what}: ${show(path)} lies under ${show(path.slice(0, -1))}, which is a ${node.inode.kind}, not a directory`);
    return node.children;
  }

  /** Applies a layer's entries over the tree. */
  apply(layer: LayerEntry[], what: string): void {
    // Whiteouts and opaque markers hide what the layers below put there, never this layer's own entries.
    for (const e of layer) {
      if (e.op === 'opaque') {
        const dir = this.lookup(e.path, what);
        if (dir?.children) dir.children.clear();
      } else if (e.op === 'whiteout') {
        const parent = this.lookup(e.path.slice(0, -1), what);
        parent?.children?.delete(key(e.path.at(-1)!));
      }
    }
    const seen = new Set<string>();
    for (const e of layer) {
      if (e.op !== 'add' && e.op !== 'hardlink') continue;
      const id = e.path.map(key).join('/');
      if (seen.has(id)) throw new InvalidRequestError(`${what}: ${show(e.path)} appears twice in the layer`);
      seen.add(id);
      if (e.path.length === 0) {
        if (e.op !== 'add' || e.inode!.kind !== 'dir') throw new InvalidRequestError(`${what}: the root of the layer is not a directory`);
        this.root.inode = e.inode!;
        continue;
      }
      const siblings = this.parentOf(e.path, what);
      const name = key(e.path.at(-1)!);
      if (e.op === 'hardlink') {
        const target = this.lookup(e.linkTarget!, what);
        if (!target) throw new InvalidRequestError(`${what}: ${show(e.path)} is a hardlink to ${show(e.linkTarget!)}, which is not in the archive before it`);
        if (target.children) throw new InvalidRequestError(`${what}: ${show(e.path)} is a hardlink to the directory ${show(e.linkTarget!)}`);
        siblings.set(name, { inode: target.inode });
        continue;
      }
      const existing = siblings.get(name);
      if (e.inode!.kind === 'dir') {
        if (existing?.children) existing.inode = e.inode!;
        else siblings.set(name, { inode: e.inode!, children: new Map() });
      } else {
        siblings.set(name, { inode: e.inode! });
      }
    }
  }

  /** The manifest of the tree: entries in manifest order, a second name of an inode as a hardlink to the first. */
  manifest(name: string): Manifest {
    const entries: Entry[] = [];
    const firstPath = new Map<Inode, Buffer>();
    const visit = (node: Node, path: Buffer) => {
      const i = node.inode;
      const p = byteText(path);
      if (i.kind !== 'dir') {
        const first = firstPath.get(i);
        if (first) {
          entries.push({ path: p, type: 'hardlink', target: byteText(first) });
          return;
        }
        firstPath.set(i, path);
      }
      const base = {
        path: p,
        mode: i.mode,
        uid: i.uid,
        gid: i.gid,
        mtime: i.mtime,
        ...(i.xattrs.length > 0 ? { xattrs: i.xattrs.map(([k, v]) => ({ key: byteText(k), value: v.toString('base64') })) } : {}),
      };
      if (i.kind === 'dir') {
        entries.push({ ...base, type: 'dir' });
        const names = [...node.children!.keys()].sort();
        for (const n of names) {
          const b = Buffer.from(n, 'latin1');
          visit(node.children!.get(n)!, path.length === 1 ? Buffer.concat([path, b]) : Buffer.concat([path, Buffer.from('/'), b]));
        }
      } else if (i.kind === 'file') {
        entries.push(i.digest ? { ...base, type: 'file', size: i.size, digest: i.digest, backing: `${i.digest.slice(0, 2)}/${i.digest.slice(2)}` } : { ...base, type: 'file', size: 0 });
      } else if (i.kind === 'symlink') {
        entries.push({ ...base, type: 'symlink', target: byteText(i.target!) });
      } else {
        entries.push({ ...base, type: i.kind });
      }
    };
    visit(this.root, Buffer.from('/'));
    return validateManifest({ version: 1, name, entries });
  }
}
