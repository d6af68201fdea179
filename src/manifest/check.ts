// Semantic checks of a manifest that JSON Schema cannot express: canonical,
// sorted, unique paths under existing parent directories, hardlink targets
// that exist and are plain files, and byte-counted limits (names, paths,
// symlink targets, xattrs, inline contents). Runs in one pass, O(entries).
import type { Entry, Manifest } from '../schema/types.generated.js';
import { InvalidManifestError } from './errors.js';
import {
  MAX_BACKING_BYTES, MAX_ENTRIES, MAX_INLINE_BYTES, MAX_NAME_BYTES, MAX_PATH_BYTES, MAX_PATH_DEPTH,
  MAX_SYMLINK_BYTES, MAX_XATTR_BUDGET, MAX_XATTR_KEY_BYTES, MAX_XATTR_VALUE_BYTES, XATTR_BUDGET_HEADER,
  xattrBudgetCost,
} from './limits.js';
import { baseName, comparePaths, parentPath, pathNames, pathProblem, utf8Length } from './paths.js';

/** Decodes base64 and refuses anything but its canonical, padded spelling. */
export function decodeBase64(text: string, pointer: string): Buffer {
  const bytes = Buffer.from(text, 'base64');
  if (bytes.toString('base64') !== text) throw new InvalidManifestError('is not canonical base64 (RFC 4648, with padding)', pointer);
  return bytes;
}

/** Decoded length of canonical base64, remembered: xattr values repeat a lot. */
function base64Length(text: string, pointer: string, seen: Map<string, number>): number {
  let n = seen.get(text);
  if (n === undefined) seen.set(text, (n = decodeBase64(text, pointer).length));
  return n;
}

function checkPath(path: string, pointer: string): void {
  const problem = pathProblem(path);
  if (problem) throw new InvalidManifestError(`path "${path}" ${problem}`, pointer);
  // UTF-8 takes at most 3 bytes per UTF-16 unit: short strings need no byte count.
  if (path.length * 3 > MAX_PATH_BYTES) {
    const bytes = utf8Length(path);
    if (bytes > MAX_PATH_BYTES) throw new InvalidManifestError(`path is ${bytes} bytes long, at most ${MAX_PATH_BYTES}`, pointer);
  }
  if (path.length > MAX_PATH_DEPTH * 2) {
    const depth = pathNames(path).length;
    if (depth > MAX_PATH_DEPTH) throw new InvalidManifestError(`path has ${depth} components, at most ${MAX_PATH_DEPTH}`, pointer);
  }
  for (let start = 1; start < path.length; ) {
    let end = path.indexOf('/', start);
    if (end < 0) end = path.length;
    if ((end - start) * 3 > MAX_NAME_BYTES) {
      const name = path.slice(start, end);
      const n = utf8Length(name);
      if (n > MAX_NAME_BYTES) throw new InvalidManifestError(`name "${name.slice(0, 40)}..." is ${n} bytes long, at most ${MAX_NAME_BYTES}`, pointer);
    }
    start = end + 1;
  }
}

function checkText(value: string, what: string, max: number, pointer: string): void {
  if (value.includes('\0')) throw new InvalidManifestError(`${what} contains a NUL character`, pointer);
  const n = utf8Length(value);
  if (n === 0) throw new InvalidManifestError(`${what} is empty`, pointer);
  if (n > max) throw new InvalidManifestError(`${what} is ${n} bytes long, at most ${max}`, pointer);
}

function checkXattrs(entry: Exclude<Entry, { type: 'hardlink' }>, pointer: string, base64Seen: Map<string, number>): void {
  const xattrs = entry.xattrs;
  if (!xattrs || xattrs.length === 0) return;
  const seen = new Set<string>();
  let budget = XATTR_BUDGET_HEADER;
  xattrs.forEach((x, i) => {
    const p = `${pointer}/xattrs/${i}`;
    checkText(x.key, 'xattr key', MAX_XATTR_KEY_BYTES, `${p}/key`);
    if (seen.has(x.key)) throw new InvalidManifestError(`xattr key "${x.key}" appears twice`, `${p}/key`);
    seen.add(x.key);
    const valueLength = base64Length(x.value, `${p}/value`, base64Seen);
    if (valueLength > MAX_XATTR_VALUE_BYTES) {
      throw new InvalidManifestError(`xattr value is ${valueLength} bytes, at most ${MAX_XATTR_VALUE_BYTES}`, `${p}/value`);
    }
    budget += xattrBudgetCost(utf8Length(x.key), valueLength);
  });
  if (budget > MAX_XATTR_BUDGET) {
    throw new InvalidManifestError(`the xattrs take ${budget} bytes as composefs counts them, at most ${MAX_XATTR_BUDGET}`, `${pointer}/xattrs`);
  }
}

function checkTypeSpecific(entry: Entry, pointer: string): void {
  switch (entry.type) {
    case 'symlink':
      checkText(entry.target, 'symlink target', MAX_SYMLINK_BYTES, `${pointer}/target`);
      break;
    case 'file':
      if (entry.inline !== undefined) {
        const content = decodeBase64(entry.inline, `${pointer}/inline`);
        if (content.length > MAX_INLINE_BYTES) {
          throw new InvalidManifestError(`inline content is ${content.length} bytes, at most ${MAX_INLINE_BYTES}`, `${pointer}/inline`);
        }
        if (content.length !== entry.size) {
          throw new InvalidManifestError(`inline content is ${content.length} bytes but size is ${entry.size}`, `${pointer}/inline`);
        }
      }
      if (entry.backing !== undefined) checkText(entry.backing, 'backing path', MAX_BACKING_BYTES, `${pointer}/backing`);
      break;
    default:
      break;
  }
}

interface Ancestor {
  path: string;
  isDir: boolean;
}

/**
 * Throws InvalidManifestError (with the JSON pointer of the entry) at the
 * first problem. Assumes the document already passed the JSON Schema.
 */
export function checkManifest(manifest: Manifest): void {
  const entries = manifest.entries;
  if (entries.length > MAX_ENTRIES) throw new InvalidManifestError(`has ${entries.length} entries, at most ${MAX_ENTRIES}`, '/entries');
  const first = entries[0];
  if (!first || first.path !== '/' || first.type !== 'dir') {
    throw new InvalidManifestError('the first entry must be the root directory "/"', '/entries/0');
  }
  // Ancestors of the previous entry, and the entry itself: with sorted paths,
  // an entry's parent is always on this stack.
  const stack: Ancestor[] = [];
  let previous: string | undefined;
  let hasHardlinks = false;
  const seenBase64 = new Map<string, number>();
  entries.forEach((entry, i) => {
    const pointer = `/entries/${i}`;
    checkPath(entry.path, `${pointer}/path`);
    if (previous !== undefined) {
      const order = comparePaths(previous, entry.path);
      if (order === 0) throw new InvalidManifestError(`path "${entry.path}" appears twice`, `${pointer}/path`);
      if (order > 0) {
        throw new InvalidManifestError(`entries are not sorted by path: "${entry.path}" must come before "${entries[i - 1]!.path}"`, `${pointer}/path`);
      }
    }
    previous = entry.path;
    if (i > 0) {
      const parent = parentPath(entry.path);
      while (stack.length > 0 && stack[stack.length - 1]!.path !== parent && !isAncestor(stack[stack.length - 1]!.path, parent)) stack.pop();
      const top = stack[stack.length - 1];
      if (!top || top.path !== parent) throw new InvalidManifestError(`parent directory "${parent}" of "${baseName(entry.path)}" is not in the manifest`, `${pointer}/path`);
      if (!top.isDir) throw new InvalidManifestError(`parent "${parent}" is not a directory`, `${pointer}/path`);
    }
    stack.push({ path: entry.path, isDir: entry.type === 'dir' });
    if (entry.type === 'hardlink') {
      hasHardlinks = true;
    } else {
      checkXattrs(entry, pointer, seenBase64);
    }
    checkTypeSpecific(entry, pointer);
  });
  if (hasHardlinks) checkHardlinks(entries);
}

function isAncestor(dir: string, path: string): boolean {
  return dir === '/' || path.startsWith(dir + '/');
}

function checkHardlinks(entries: Entry[]): void {
  const byPath = new Map<string, Entry>();
  for (const e of entries) byPath.set(e.path, e);
  entries.forEach((entry, i) => {
    if (entry.type !== 'hardlink') return;
    const pointer = `/entries/${i}/target`;
    const problem = pathProblem(entry.target);
    if (problem) throw new InvalidManifestError(`hardlink target "${entry.target}" ${problem}`, pointer);
    if (entry.target === entry.path) throw new InvalidManifestError(`hardlink "${entry.path}" points to itself`, pointer);
    const target = byPath.get(entry.target);
    if (!target) throw new InvalidManifestError(`hardlink target "${entry.target}" is not in the manifest`, pointer);
    if (target.type === 'dir') throw new InvalidManifestError(`hardlink target "${entry.target}" is a directory: directories cannot be hardlinked`, pointer);
    if (target.type === 'hardlink') {
      throw new InvalidManifestError(`hardlink target "${entry.target}" is itself a hardlink: point at "${target.target}" instead`, pointer);
    }
  });
}
