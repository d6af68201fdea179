// A manifest's JSON text to the image's tree one entry at a time: the way
// `image build X.json` takes, so that the whole parsed manifest (for /usr,
// 54 MB of entry objects beside the tree) is never held at once. The text is
// scanned for where each entry is (manifest/scan.ts); each entry is parsed
// when the tree asks for it, checked against the schema of its kind and by
// the same per-entry checks as checkManifest (EntryChecker), turned into its
// inode and let go.
//
// It only ever accepts what the whole-manifest path accepts, and builds the
// same tree: anything it is not sure of (a value given as {"base64"}, which
// makes the codec binary; an entry whose own xattrs leave little room for the
// image's), and any problem at all, it gives up on, and the text is parsed
// and checked whole (parseManifestText), which builds the image or refuses it
// with the words it always used: the schema's problems before the checks',
// whatever entries they are in. test/composefs/manifest-tree.test.ts compares
// the two paths on generated and mutated manifests.
import { checkManifestName, EntryChecker } from '../manifest/check.js';
import { InvalidManifestError } from '../manifest/errors.js';
import { checkStreamedEntry, headPassesSchema, parseManifestText } from '../manifest/load.js';
import { comparePaths, pathProblem } from '../manifest/paths.js';
import { scanManifest, type ManifestLayout } from '../manifest/scan.js';
import { UTF8_TEXT, type TextCodec } from '../manifest/text.js';
import type { Entry } from '../schema/types.generated.js';
import { entryInode, Kind, ownString, type Attributed, type Directory, type ImageTree, type Inode, type Link, type TreeBuilder, type TreeSource } from './tree.js';
import { imageTree, type WriteOptions } from './writer.js';

/**
 * Checks of a manifest's entries made elsewhere, ahead of the build (the CLI's
 * worker: cli/check-ahead.ts): the same checks the streaming path makes, of
 * the same text.
 */
export interface CheckAhead {
  /** Begins the checks of the entries `layout` finds. */
  start(layout: ManifestLayout): void;
  /** Whether entry i and every one before it passed (waits until it is known); false: the build gives up. */
  checked(i: number): boolean;
  /** Entry i's directory (-1 for the root), once checked(i). */
  readonly parents: Int32Array<ArrayBufferLike>;
  /** The checks are no longer needed. */
  stop(): void;
}

/** The streaming path gives up on the text; the whole-manifest path decides. */
class GiveUp extends Error {}

class ManifestTextSource implements TreeSource {
  readonly codec: TextCodec = UTF8_TEXT;
  readonly count: number;
  /** Checks each entry here, unless a worker checks them ahead (`ahead`). */
  private readonly checker: EntryChecker | undefined;
  /** The entry the tree is asking about, parsed and checked, and the index of its directory; let go once its inode is made. */
  private entry: Entry | undefined;
  private index = -1;
  private parentIndex = -1;
  /** Each hardlink entry's target path, resolved in the tree once every entry is in it. */
  private readonly hardlinks = new Map<number, string>();
  private root: Directory | undefined;

  constructor(private readonly text: string, private readonly layout: ManifestLayout, private readonly ahead?: CheckAhead) {
    this.count = layout.count;
    this.checker = ahead === undefined ? new EntryChecker(UTF8_TEXT) : undefined;
  }

  /** Entry i, the one after the last (the tree asks in manifest order). */
  private at(i: number): Entry {
    if (i === this.index) return this.entry!;
    const ahead = this.ahead;
    if (ahead !== undefined && !ahead.checked(i)) throw new GiveUp();
    let value: unknown;
    try {
      value = JSON.parse(this.text.slice(this.layout.starts[i], this.layout.ends[i]));
    } catch {
      throw new GiveUp();
    }
    // Checked ahead: the same text the worker parsed and checked, so the same entry.
    const parent = ahead !== undefined ? ahead.parents[i]! : checkStreamedEntry(this.checker!, value, i);
    if (parent === undefined) throw new GiveUp();
    const entry = value as Entry;
    this.parentIndex = parent;
    this.entry = entry;
    this.index = i;
    return entry;
  }

  parent(i: number): number {
    this.at(i);
    return this.parentIndex;
  }
  name(i: number): string {
    const path = this.at(i).path as string;
    return ownString(path.slice(path.lastIndexOf('/') + 1));
  }
  isHardlink(i: number): boolean {
    const e = this.at(i);
    if (e.type !== 'hardlink') return false;
    this.hardlinks.set(i, e.target as string);
    this.entry = undefined;
    this.index = -1;
    return true;
  }
  /** The target found in the tree by its names: a file that is there, neither a directory nor a hardlink (as checkHardlinks asks). */
  hardlinkTarget(i: number): number {
    const target = this.hardlinks.get(i)!;
    if (pathProblem(target) !== undefined) throw new GiveUp();
    let node: Inode | Link = this.root!;
    for (const name of target.slice(1).split('/')) {
      if (node.kind !== Kind.Directory) throw new GiveUp();
      const child = childNamed(node, name);
      if (child === undefined) throw new GiveUp();
      node = child;
    }
    if (node.kind === -1 || node.kind === Kind.Directory) throw new GiveUp();
    return node.source;
  }
  inode(b: TreeBuilder, i: number, name: string, parent: Directory | null): Inode {
    const inode = entryInode(b, this.at(i) as Attributed, i, name, parent);
    if (i === 0) this.root = inode as Directory;
    this.entry = undefined;
    this.index = -1;
    return inode;
  }
}

/** The entry of a directory that has this name (its entries are in manifest order: by name, as bytes). */
function childNamed(dir: Directory, name: string): Inode | Link | undefined {
  const entries = dir.entries;
  let lo = 0;
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const order = comparePaths(entries[mid]!.name, name);
    if (order === 0) return entries[mid];
    if (order < 0) lo = mid + 1;
    else hi = mid;
  }
  return undefined;
}

/** Where a text's entries are, when its document and entry boundaries are as the streaming path expects. */
function streamableLayout(json: string): ManifestLayout | undefined {
  const layout = scanManifest(json);
  if (layout === undefined || !headPassesSchema(layout.head, layout.count)) return undefined;
  try {
    checkManifestName(layout.head as { name?: string });
  } catch {
    return undefined;
  }
  return layout;
}

/**
 * The tree of a manifest's JSON text built entry by entry, or undefined when
 * the streaming path gives up on it (on any problem: the whole-manifest path
 * words it). `options` is asked for when the build begins. With `ahead`, a
 * worker checks the entries (cli/check-ahead.ts); it is let go either way.
 */
export function streamedManifestTree(json: string, options: () => WriteOptions, ahead?: CheckAhead): ImageTree | undefined {
  try {
    const layout = streamableLayout(json);
    if (layout === undefined) return undefined;
    ahead?.start(layout);
    return imageTree({ source: new ManifestTextSource(json, layout, ahead) }, options());
  } catch (err) {
    if (err instanceof GiveUp || err instanceof InvalidManifestError) return undefined;
    throw err;
  } finally {
    ahead?.stop();
  }
}

/**
 * The image's tree of a manifest's JSON text (as manifestText gives it),
 * entry by entry when it can be, else through the whole parsed manifest;
 * throws InvalidManifestError, as parseManifestText and the writer do. The
 * options may be given as a function, asked for once the manifest's own
 * problems would have been found (a bad option is reported after them).
 * `ahead`: a worker to check the entries while the tree is built (for a
 * large manifest: CHECK_AHEAD_MIN_BYTES), given the same text (share).
 */
export function manifestTextTree(json: string, options: WriteOptions | (() => WriteOptions) = {}, ahead?: CheckAhead): ImageTree {
  const optionsNow = typeof options === 'function' ? options : () => options;
  const streamed = streamedManifestTree(json, optionsNow, ahead);
  if (streamed !== undefined) return streamed;
  const manifest = parseManifestText(json);
  return imageTree({ manifest, consume: true }, optionsNow());
}
