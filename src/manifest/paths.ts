// Paths inside an image: canonical absolute paths ("/" or "/a/b"), compared
// component by component in byte order of their names' bytes (the UTF-8 of a
// string, or the bytes of {"base64"}). That order puts a directory right
// before its contents, which is the order of manifest entries and of a
// composefs dump. The string functions work on UTF-8 strings and on the
// binary strings of BINARY_TEXT (text.ts) alike.
import { BINARY_TEXT, bytesOf, type ByteText } from './text.js';

export { utf8Length } from './text.js';

/** The names of a canonical path; [] for the root. */
export function pathNames(path: string): string[] {
  return path === '/' ? [] : path.slice(1).split('/');
}

export function parentPath(path: string): string {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** The bytes of a path with "/" mapped to 0, so plain byte order is component order. */
export function pathSortKey(path: ByteText): Buffer {
  const b = bytesOf(path);
  for (let i = 0; i < b.length; i++) if (b[i] === 0x2f) b[i] = 0;
  return b;
}

/**
 * Code point order of UTF-16 units (= UTF-8 byte order for strings without
 * lone surrogates, which checkManifest refuses; = byte order for binary
 * strings), with "/" lowest.
 */
function unitRank(u: number): number {
  if (u === 0x2f) return -1;
  if (u >= 0xd800 && u <= 0xdfff) return u + 0x2000; // surrogates encode code points above U+FFFF
  if (u >= 0xe000) return u - 0x800;
  return u;
}

/**
 * Negative, zero or positive as a sorts before, equal to or after b, by their
 * bytes (no allocation for two strings). Two strings must both be UTF-8
 * strings or both binary strings; a {"base64"} value is compared as bytes.
 */
export function comparePaths(a: ByteText, b: ByteText): number {
  if (typeof a !== 'string' || typeof b !== 'string') return comparePaths(BINARY_TEXT.text(a), BINARY_TEXT.text(b));
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return unitRank(x) - unitRank(y);
  }
  return a.length - b.length;
}

/** Why a path is not canonical, or undefined when it is. */
export function pathProblem(path: string): string | undefined {
  if (!path.startsWith('/')) return 'is not absolute: it must start with "/"';
  if (path.includes('\0')) return 'contains a NUL character';
  if (path === '/') return undefined;
  if (path.includes('//')) return 'has an empty name ("//")';
  if (path.endsWith('/')) return 'ends with "/"';
  const dots = /\/(\.\.?)(?:\/|$)/.exec(path);
  if (dots) return `has the name "${dots[1]}", which is not allowed`;
  return undefined;
}

/** Resolves "a//b/", "b" and the like to a canonical path, as composefs looks up hardlink targets. */
export function normalizeLookupPath(path: string): string {
  const names = path.split('/').filter((n) => n !== '');
  return '/' + names.join('/');
}
