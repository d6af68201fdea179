// The limits a manifest must respect, in one place. Most come from the kernel
// or the composefs format (and are enforced the same way by mkcomposefs); the
// entry count and document size bound the work one request can cause.
// schemas/manifest.schema.json repeats the ones JSON Schema can express, and a
// test keeps the two in agreement.
import { COMPOSEFS_INLINE_MAX, EROFS_NAME_MAX, PATH_MAX } from '../composefs/format.js';

/** Longest file name, in bytes (EROFS_NAME_LEN, NAME_MAX). */
export const MAX_NAME_BYTES = EROFS_NAME_MAX;
/** Longest absolute path, in bytes (PATH_MAX without its NUL). */
export const MAX_PATH_BYTES = PATH_MAX - 1;
/** Deepest path, in components: a bound on recursion in every consumer. */
export const MAX_PATH_DEPTH = 1024;
/** Longest symlink target, in bytes (PATH_MAX without its NUL), and the shortest. */
export const MAX_SYMLINK_BYTES = PATH_MAX - 1;
/** Longest backing-file path of a regular file, in bytes. */
export const MAX_BACKING_BYTES = PATH_MAX - 1;
/** Longest xattr name, in bytes (XATTR_NAME_MAX). */
export const MAX_XATTR_KEY_BYTES = 255;
/** Largest xattr value, in bytes (the on-disk size field is 16 bits). */
export const MAX_XATTR_VALUE_BYTES = 65535;
/**
 * Budget for all xattrs of one entry, counted as composefs does: 12 bytes of
 * header plus, per xattr, 7 + name + value bytes (UINT16_MAX / 2).
 */
export const MAX_XATTR_BUDGET = 32767;
/** Largest inline file content, in bytes. */
export const MAX_INLINE_BYTES = COMPOSEFS_INLINE_MAX;
/** Largest regular file: 1024 chunk pointers of 2^43 bytes. */
export const MAX_FILE_SIZE = 2 ** 53;
/** Most entries in one manifest. */
export const MAX_ENTRIES = 10_000_000;
/** Largest manifest document, in bytes of JSON text. */
export const MAX_MANIFEST_BYTES = 500_000_000;

/** Bytes one xattr adds to the per-entry budget (the header counts with the first). */
export function xattrBudgetCost(keyBytes: number, valueBytes: number): number {
  return 2 * 4 - 1 + keyBytes + valueBytes;
}
export const XATTR_BUDGET_HEADER = 12;
