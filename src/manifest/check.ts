// Semantic checks of a manifest that JSON Schema cannot express: canonical,
// sorted, unique paths under existing parent directories, hardlink targets
// that exist and are plain files, and byte-counted limits (names, paths,
// symlink targets, xattrs, inline contents). Runs in one pass, O(entries).
// Every value that becomes bytes in the image is checked, ordered and
// compared as those bytes (text.ts): a string with a lone surrogate is refused
// at its JSON pointer, and {"base64"} values are checked like strings.
import type { Bytes, Entry, Manifest } from '../schema/types.generated.js';
import { InvalidManifestError } from './errors.js';
import {
  MAX_BACKING_BYTES, MAX_ENTRIES, MAX_INLINE_BYTES, MAX_NAME_BYTES, MAX_PATH_BYTES, MAX_PATH_DEPTH,
  MAX_SYMLINK_BYTES, MAX_XATTR_BUDGET, MAX_XATTR_KEY_BYTES, MAX_XATTR_VALUE_BYTES, XATTR_BUDGET_HEADER,
  xattrBudgetCost,
} from './limits.js';
import { baseName, comparePaths, parentPath, pathNames, pathProblem } from './paths.js';
import { BINARY_TEXT, isEncodable, loneSurrogateProblem, UTF8_TEXT, type ByteText, type TextCodec } from './text.js';
import {
  OVERLAY_ESCAPE_PREFIX, OVERLAY_ESCAPED_OPAQUE, OVERLAY_ESCAPED_WHITEOUT, OVERLAY_ESCAPED_WHITEOUTS, OVERLAY_METACOPY,
  OVERLAY_OPAQUE, OVERLAY_PREFIX, OVERLAY_REDIRECT, OVERLAY_USER_OPAQUE, OVERLAY_USER_WHITEOUT, OVERLAY_USER_WHITEOUTS,
} from '../composefs/format.js';

/** Decodes base64 and refuses anything but its canonical, padded spelling. */
declare const checked: unique symbol;
/**
 * A manifest that passed the JSON Schema and checkManifest, as validateManifest
 * returns it: the writer takes it without checking it again.
 */
export type CheckedManifest = Manifest & { readonly [checked]: true };

export function decodeBase64(text: string, pointer: string): Buffer {
  const bytes = Buffer.from(text, 'base64');
  if (bytes.toString('base64') !== text) throw new InvalidManifestError('is not canonical base64 (RFC 4648, with padding)', pointer);
  return bytes;
}

/** JSON pointers are made only for a message: most entries have no problem. */
function at(index: number, field: string): string {
  return `/entries/${index}/${field}`;
}

/**
 * A string with no UTF-8 bytes, or {"base64"} that is not canonical, is
 * refused at /entries/index/field. Returns whether the value is given as bytes.
 */
function checkEncodable(v: ByteText, what: string, index: number, field: string): boolean {
  if (typeof v === 'string') {
    if (isEncodable(v)) return false; // the common case: no pointer is built
    throw new InvalidManifestError(loneSurrogateProblem(v, what)!, index < 0 ? field : at(index, field));
  }
  decodeBase64((v as Bytes).base64, `${at(index, field)}/base64`);
  return true;
}

/**
 * Every value of an entry that becomes bytes in the image has UTF-8 bytes
 * (or is canonical base64); returns whether one is given as bytes, which
 * makes the manifest's codec BINARY_TEXT.
 */
export function checkEntryEncodable(e: Entry, index: number): boolean {
  let bytes = checkEncodable(e.path, 'path', index, 'path');
  if (e.type === 'hardlink') return checkEncodable(e.target, 'hardlink target', index, 'target') || bytes;
  if (e.type === 'symlink') bytes = checkEncodable(e.target, 'symlink target', index, 'target') || bytes;
  if (e.type === 'file' && e.backing !== undefined) bytes = checkEncodable(e.backing, 'backing path', index, 'backing') || bytes;
  const xattrs = e.xattrs;
  if (xattrs) for (let i = 0; i < xattrs.length; i++) bytes = checkEncodable(xattrs[i]!.key, 'xattr key', index, `xattrs/${i}/key`) || bytes;
  return bytes;
}

function checkPath(path: string, index: number, codec: TextCodec): void {
  const problem = pathProblem(path);
  if (problem) throw new InvalidManifestError(`path "${codec.show(path)}" ${problem}`, at(index, 'path'));
  // UTF-8 takes at most 3 bytes per UTF-16 unit (binary strings 1 per char): short strings need no byte count.
  const perUnit = codec.binary ? 1 : 3;
  if (path.length * perUnit > MAX_PATH_BYTES) {
    const bytes = codec.length(path);
    if (bytes > MAX_PATH_BYTES) throw new InvalidManifestError(`path is ${bytes} bytes long, at most ${MAX_PATH_BYTES}`, at(index, 'path'));
  }
  if (path.length > MAX_PATH_DEPTH * 2) {
    const depth = pathNames(path).length;
    if (depth > MAX_PATH_DEPTH) throw new InvalidManifestError(`path has ${depth} components, at most ${MAX_PATH_DEPTH}`, at(index, 'path'));
  }
  if (path.length * perUnit <= MAX_NAME_BYTES) return; // no name can be too long
  for (let start = 1; start < path.length; ) {
    let end = path.indexOf('/', start);
    if (end < 0) end = path.length;
    if ((end - start) * perUnit > MAX_NAME_BYTES) {
      const name = path.slice(start, end);
      const n = codec.length(name);
      if (n > MAX_NAME_BYTES) throw new InvalidManifestError(`name "${codec.show(name.slice(0, 40))}..." is ${n} bytes long, at most ${MAX_NAME_BYTES}`, at(index, 'path'));
    }
    start = end + 1;
  }
}

/** What is wrong with a piece of text (a key, a target, a path), or undefined. */
function textProblem(value: string, what: string, max: number, codec: TextCodec): string | undefined {
  if (value.includes('\0')) return `${what} contains a NUL character`;
  const n = codec.length(value);
  if (n === 0) return `${what} is empty`;
  if (n > max) return `${what} is ${n} bytes long, at most ${max}`;
  return undefined;
}

function hasKeyBefore(xattrs: ReadonlyArray<{ key: ByteText }>, i: number, key: string, codec: TextCodec): boolean {
  for (let j = 0; j < i; j++) if (codec.text(xattrs[j]!.key) === key) return true;
  return false;
}

/** Checks an entry's own xattrs; returns their budget as composefs counts it. */
function checkXattrs(xattrs: ReadonlyArray<{ key: ByteText; value: string }>, index: number, base64Seen: Map<string, number>, codec: TextCodec): number {
  // Few xattrs per entry: a scan finds a repeated key faster than a set.
  const seen = xattrs.length > 16 ? new Set<string>() : undefined;
  let budget = XATTR_BUDGET_HEADER;
  for (let i = 0; i < xattrs.length; i++) {
    const x = xattrs[i]!;
    const key = codec.text(x.key);
    const problem = textProblem(key, 'xattr key', MAX_XATTR_KEY_BYTES, codec);
    if (problem) throw new InvalidManifestError(problem, at(index, `xattrs/${i}/key`));
    if (seen ? seen.has(key) : hasKeyBefore(xattrs, i, key, codec)) throw new InvalidManifestError(`xattr key "${codec.show(key)}" appears twice`, at(index, `xattrs/${i}/key`));
    seen?.add(key);
    let valueLength = base64Seen.get(x.value);
    if (valueLength === undefined) base64Seen.set(x.value, (valueLength = decodeBase64(x.value, at(index, `xattrs/${i}/value`)).length));
    if (valueLength > MAX_XATTR_VALUE_BYTES) {
      throw new InvalidManifestError(`xattr value is ${valueLength} bytes, at most ${MAX_XATTR_VALUE_BYTES}`, at(index, `xattrs/${i}/value`));
    }
    budget += xattrBudgetCost(codec.length(key), valueLength);
  }
  if (budget > MAX_XATTR_BUDGET) {
    throw new InvalidManifestError(`the xattrs take ${budget} bytes as composefs counts them, at most ${MAX_XATTR_BUDGET}`, at(index, 'xattrs'));
  }
  return budget;
}

/**
 * The most the image's own xattrs can add to one inode: metacopy (7 + 24 + 36)
 * and redirect (7 + 24 + 1 + a backing path of up to 4095 bytes) on a file,
 * the whiteout marks (39 + 28) on a whiteout, those of a directory holding
 * whiteouts (40 + 29 + 38 + 27) and the root's opaque mark (30). An entry
 * whose own xattrs leave this much room needs no closer look.
 */
export const IMAGE_XATTRS_MAX = 67 + 32 + MAX_BACKING_BYTES + 67 + 134 + 30;

function checkTypeSpecific(entry: Entry, index: number, codec: TextCodec): void {
  switch (entry.type) {
    case 'symlink': {
      const problem = textProblem(codec.text(entry.target), 'symlink target', MAX_SYMLINK_BYTES, codec);
      if (problem) throw new InvalidManifestError(problem, at(index, 'target'));
      break;
    }
    case 'file':
      if (entry.inline !== undefined) {
        const content = decodeBase64(entry.inline, at(index, 'inline'));
        if (content.length > MAX_INLINE_BYTES) {
          throw new InvalidManifestError(`inline content is ${content.length} bytes, at most ${MAX_INLINE_BYTES}`, at(index, 'inline'));
        }
        if (content.length !== entry.size) {
          throw new InvalidManifestError(`inline content is ${content.length} bytes but size is ${entry.size}`, at(index, 'inline'));
        }
      }
      if (entry.backing !== undefined) {
        const problem = textProblem(codec.text(entry.backing), 'backing path', MAX_BACKING_BYTES, codec);
        if (problem) throw new InvalidManifestError(problem, at(index, 'backing'));
      }
      break;
    default:
      break;
  }
}

/**
 * Throws InvalidManifestError (with the JSON pointer of the entry) at the
 * first problem. Assumes the document already passed the JSON Schema.
 */
export function checkManifest(manifest: Manifest): asserts manifest is CheckedManifest {
  const entries = manifest.entries;
  if (entries.length > MAX_ENTRIES) throw new InvalidManifestError(`has ${entries.length} entries, at most ${MAX_ENTRIES}`, '/entries');
  checkManifestName(manifest);
  if (entries.length === 0) throw new InvalidManifestError('the first entry must be the root directory "/"', '/entries/0');
  // Values with no bytes go first: the codec would otherwise turn them into some.
  let anyBytes = false;
  for (let i = 0; i < entries.length; i++) if (checkEntryEncodable(entries[i]!, i)) anyBytes = true;
  const checker = new EntryChecker(anyBytes ? BINARY_TEXT : UTF8_TEXT);
  for (let i = 0; i < entries.length; i++) checker.check(entries[i]!, i);
  if (checker.hasHardlinks) checkHardlinks(entries, checker.codec);
  if (checker.tight) checkImageXattrs(entries, checker.codec, checker.seenBase64, checker.tight);
}

/** Not stored in the image, but echoed on the bus and in logs: the name must be text too. */
export function checkManifestName(manifest: Pick<Manifest, 'name'>): void {
  if (manifest.name !== undefined) checkEncodable(manifest.name, 'name', -1, '/name');
}

/**
 * The checks of each entry in turn, in manifest order, with what they need
 * of the entries before it (the previous path, the directories above it):
 * all of checkManifest but the encodings, which decide the codec first, and
 * what needs every entry (hardlink targets, which may come later, and the
 * room left for the image's own xattrs on the entries in `tight`).
 */
export class EntryChecker {
  /** Ancestors of the previous entry, and the entry itself: paths, whether each is a directory, their indexes. */
  private readonly stackPaths: string[] = [];
  private readonly stackIsDir: boolean[] = [];
  private readonly stackIndexes: number[] = [];
  private previous: string | undefined;
  hasHardlinks = false;
  /** Entries whose own xattrs come close enough to the budget that what the image adds may not fit. */
  tight: Set<number> | undefined;
  /** Decoded lengths of the xattr values seen (values repeat). */
  readonly seenBase64 = new Map<string, number>();

  constructor(readonly codec: TextCodec) {}

  /** Checks entry i, the one after the last checked; returns the index of the directory holding it (-1 for the root). */
  check(entry: Entry, i: number): number {
    const codec = this.codec;
    const path = codec.text(entry.path);
    if (i === 0 && (path !== '/' || entry.type !== 'dir')) {
      throw new InvalidManifestError('the first entry must be the root directory "/"', '/entries/0');
    }
    checkPath(path, i, codec);
    const previous = this.previous;
    if (previous !== undefined) {
      const order = comparePaths(previous, path);
      if (order === 0) throw new InvalidManifestError(`path "${codec.show(path)}" appears twice`, at(i, 'path'));
      if (order > 0) {
        throw new InvalidManifestError(`entries are not sorted by path: "${codec.show(path)}" must come before "${codec.show(previous)}"`, at(i, 'path'));
      }
    }
    this.previous = path;
    const stackPaths = this.stackPaths;
    let parent = -1;
    if (i > 0) {
      // With sorted paths, an entry's parent is on the stack: the path up to the last "/" (no string is cut for it).
      const cut = path.lastIndexOf('/');
      const parentLength = cut === 0 ? 1 : cut;
      let top = stackPaths.length - 1;
      while (top >= 0 && !holdsOrIs(stackPaths[top]!, path, parentLength)) top--;
      stackPaths.length = top + 1;
      this.stackIsDir.length = top + 1;
      this.stackIndexes.length = top + 1;
      if (top < 0 || stackPaths[top]!.length !== parentLength) {
        throw new InvalidManifestError(`parent directory "${codec.show(parentPath(path))}" of "${codec.show(baseName(path))}" is not in the manifest`, at(i, 'path'));
      }
      if (!this.stackIsDir[top]) throw new InvalidManifestError(`parent "${codec.show(parentPath(path))}" is not a directory`, at(i, 'path'));
      parent = this.stackIndexes[top]!;
    }
    stackPaths.push(path);
    this.stackIsDir.push(entry.type === 'dir');
    this.stackIndexes.push(i);
    if (entry.type === 'hardlink') {
      this.hasHardlinks = true;
    } else if (entry.xattrs !== undefined && entry.xattrs.length > 0) {
      const budget = checkXattrs(entry.xattrs, i, this.seenBase64, codec);
      if (budget > MAX_XATTR_BUDGET - IMAGE_XATTRS_MAX) (this.tight ??= new Set()).add(i);
    }
    if (entry.type === 'symlink' || entry.type === 'file') checkTypeSpecific(entry, i, codec);
    return parent;
  }
}

/**
 * The xattr budget of each inode as the image will hold it: the writer adds
 * overlay xattrs (the metacopy digest and redirect of an external file, the
 * marks of a whiteout and of its directory, the root's opaque mark) under the
 * same budget, and would refuse an entry whose own xattrs leave no room for
 * them. Checked here, so that whatever validation accepts, the writer builds.
 * Mirrors the writer's accounting exactly (composefs's: a user key under
 * trusted.overlay. is renamed to trusted.overlay.overlay. but keeps the
 * budget of its old name; an added xattr replaces one of the same name), for
 * format 1, the default, which adds the most. Only entries whose own xattrs
 * come within IMAGE_XATTRS_MAX of the budget can run out of room, and only
 * they are simulated.
 */
function checkImageXattrs(entries: Entry[], codec: TextCodec, base64Seen: Map<string, number>, tight: Set<number>): void {
  const states = new Map<number, XattrBudget>();
  const state = (i: number): XattrBudget | undefined => {
    const e = entries[i]!;
    if (!tight.has(i) || e.type === 'hardlink' || !e.xattrs || e.xattrs.length === 0) return undefined;
    let s = states.get(i);
    if (!s) states.set(i, (s = new XattrBudget(e.xattrs, codec, base64Seen, `/entries/${i}`)));
    return s;
  };
  let dirIndex: Map<string, number> | undefined;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    if (e.type === 'file' && e.size > 0 && e.inline === undefined) {
      const s = state(i);
      s?.add(OVERLAY_METACOPY, e.digest === undefined ? 0 : 4 + 32);
      if (s && e.backing !== undefined) s.add(OVERLAY_REDIRECT, 1 + codec.length(codec.text(e.backing)));
    } else if (e.type === 'whiteout') {
      const s = state(i);
      s?.add(OVERLAY_ESCAPED_WHITEOUT, 0);
      s?.add(OVERLAY_USER_WHITEOUT, 0);
      if (!dirIndex) {
        dirIndex = new Map();
        entries.forEach((d, k) => d.type === 'dir' && dirIndex!.set(codec.text(d.path), k));
      }
      const parent = state(dirIndex.get(parentPath(codec.text(e.path)))!);
      parent?.add(OVERLAY_ESCAPED_WHITEOUTS, 0);
      parent?.add(OVERLAY_USER_WHITEOUTS, 0);
      parent?.add(OVERLAY_ESCAPED_OPAQUE, 1);
      parent?.add(OVERLAY_USER_OPAQUE, 1);
    }
  }
  state(0)?.add(OVERLAY_OPAQUE, 1);
}

/** One inode's xattrs as the writer counts them, from the entry's own. */
class XattrBudget {
  private used = XATTR_BUDGET_HEADER;
  /** Key as the image names it -> what removing it takes off the budget. */
  private readonly keys = new Map<string, number>();
  constructor(xattrs: ReadonlyArray<{ key: ByteText; value: string }>, codec: TextCodec, base64Seen: Map<string, number>, private readonly pointer: string) {
    for (const x of xattrs) {
      const key = codec.text(x.key);
      const valueBytes = base64Seen.get(x.value) ?? Buffer.from(x.value, 'base64').length;
      this.used += xattrBudgetCost(codec.length(key), valueBytes);
      const renamed = key.startsWith(OVERLAY_PREFIX) ? OVERLAY_ESCAPE_PREFIX + key.slice(OVERLAY_PREFIX.length) : key;
      this.keys.set(renamed, xattrBudgetCost(codec.length(renamed), valueBytes));
    }
  }

  /** Adds (or replaces) an xattr with an ASCII name. */
  add(key: string, valueBytes: number): void {
    const old = this.keys.get(key);
    if (old !== undefined) {
      this.keys.delete(key);
      this.used = this.keys.size === 0 ? 0 : this.used - old;
    }
    const cost = xattrBudgetCost(key.length, valueBytes) + (this.keys.size === 0 ? XATTR_BUDGET_HEADER : 0);
    if (this.used + cost > MAX_XATTR_BUDGET) {
      throw new InvalidManifestError(
        `no room for the ${key} xattr the image adds: the xattrs would take ${this.used + cost} bytes as composefs counts them, at most ${MAX_XATTR_BUDGET}`,
        `${this.pointer}/xattrs`,
      );
    }
    this.used += cost;
    this.keys.set(key, xattrBudgetCost(key.length, valueBytes));
  }
}

/** Whether `dir` is the first `length` characters of `path` (a parent), or an ancestor of those. */
function holdsOrIs(dir: string, path: string, length: number): boolean {
  if (dir === '/') return true;
  if (dir.length > length || !path.startsWith(dir)) return false;
  return dir.length === length || path.charCodeAt(dir.length) === 0x2f;
}

function checkHardlinks(entries: Entry[], codec: TextCodec): void {
  const byPath = new Map<string, Entry>();
  for (const e of entries) byPath.set(codec.text(e.path), e);
  entries.forEach((entry, i) => {
    if (entry.type !== 'hardlink') return;
    const pointer = `/entries/${i}/target`;
    const path = codec.text(entry.path);
    const targetPath = codec.text(entry.target);
    const shown = codec.show(targetPath);
    const problem = pathProblem(targetPath);
    if (problem) throw new InvalidManifestError(`hardlink target "${shown}" ${problem}`, pointer);
    if (targetPath === path) throw new InvalidManifestError(`hardlink "${codec.show(path)}" points to itself`, pointer);
    const target = byPath.get(targetPath);
    if (!target) throw new InvalidManifestError(`hardlink target "${shown}" is not in the manifest`, pointer);
    if (target.type === 'dir') throw new InvalidManifestError(`hardlink target "${shown}" is a directory: directories cannot be hardlinked`, pointer);
    if (target.type === 'hardlink') {
      throw new InvalidManifestError(`hardlink target "${shown}" is itself a hardlink: point at "${codec.show(codec.text(target.target))}" instead`, pointer);
    }
  });
}
