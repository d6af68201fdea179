// The xattrs of an image, interned: one record per distinct key (its on-disk
// prefix index, suffix and name-filter bit computed once) and one per
// distinct key and value, which every inode carrying it points to. That makes
// counting the inodes that share an xattr, and so choosing the shared ones, a
// matter of counting references. Also the overlay xattrs the writer adds
// (metacopy, redirect, the whiteout and opaque marks), made once per image.
import type { TextCodec } from '../manifest/text.js';
import type { DigestPool } from './digests.js';
import {
  EROFS_XATTR_ENTRY_SIZE, EROFS_XATTR_FILTER_BITS, EROFS_XATTR_FILTER_SEED, EROFS_XATTR_WRITE_PREFIXES,
  FSVERITY_HASH_ALG_SHA256, OVERLAY_ESCAPE_PREFIX, OVERLAY_ESCAPED_OPAQUE, OVERLAY_ESCAPED_WHITEOUT,
  OVERLAY_ESCAPED_WHITEOUTS, OVERLAY_METACOPY, OVERLAY_OPAQUE, OVERLAY_PREFIX, OVERLAY_REDIRECT, OVERLAY_USER_OPAQUE,
  OVERLAY_USER_WHITEOUT, OVERLAY_USER_WHITEOUTS, XATTR_ENTRY,
} from './format.js';
import { xxh32 } from './xxhash.js';

// ---- digests ---------------------------------------------------------------------

/** A digest as the schema spells it: 64 lowercase hex digits. */
export function isLowerHex64(s: string): boolean {
  if (s.length !== 64) return false;
  for (let i = 0; i < 64; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false;
  }
  return true;
}

function isLowerHexDigit(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66);
}

/** Whether a backing path is an object path: 2 lowercase hex digits, "/", 62 more. */
function isObjectPath(s: string): boolean {
  if (s.length !== 65 || s.charCodeAt(2) !== 0x2f) return false;
  for (let i = 0; i < 65; i++) if (i !== 2 && !isLowerHexDigit(s.charCodeAt(i))) return false;
  return true;
}

/**
 * Whether a backing path is the object path of `digits` (64 lowercase hex
 * digits: a metacopy's identity), their first two, "/", the rest; compared
 * natively, as this runs once per external file.
 */
export function isObjectPathOf(path: string, digits: string): boolean {
  return (
    path.length === 65 && digits.length === 64 && path.charCodeAt(2) === 0x2f && path.charCodeAt(0) === digits.charCodeAt(0) &&
    path.charCodeAt(1) === digits.charCodeAt(1) && path.endsWith(digits.substring(2))
  );
}

// ---- xattrs: one record per distinct key, one per distinct key and value ---------

export interface XattrKey {
  /** The key as a string of the image's codec (with its bytes in `bytes`). */
  text: string;
  codec: TextCodec;
  bytes: Buffer;
  /** Index of the short prefix stripped on disk, and the rest of the key. */
  prefixIndex: number;
  suffix: Buffer;
  /** The bit this key sets in an inode's xattr name filter. */
  filterBit: number;
  isAcl: boolean;
  /** Position in byte order among all keys of the image, set before sorting. */
  rank: number;
  /** The values seen with this key, by identity (see Xattr.identity). */
  values: Map<string, Xattr>;
  /** The key a user's trusted.overlay.* key is renamed to, once asked for. */
  escaped: XattrKey | null;
}

/** How a value's bytes are held: decoded, or still the manifest's text. */
export const VALUE_BYTES = 0;
/** "/" and the backing path. */
const VALUE_REDIRECT = 1;
/** The fs-verity metacopy header and the digest from hex; empty without a digest. */
const VALUE_METACOPY = 2;
/** The identity of the metacopy of a file without digest (not hex, so no digest's). */
const NO_DIGEST = '-';
/**
 * "/" and a backing path that is a digest's object path ("ab/cdef...": 2 and
 * 62 lowercase hex digits): the identity is the 64 digits, which for nearly
 * every file is the file's own digest string, so the tree keeps no backing
 * string. Every backing of that shape goes here, matching its file or not,
 * so that equal values still meet in one record.
 */
const VALUE_OBJECT_REDIRECT = 3;
/**
 * The metacopy of the external file that carries it, whose digest is the
 * file's own (ExternalFile.digest) and no other file's: one record per image
 * stands for all of them (an xattr that only one inode carries is never
 * shared, so it needs no identity of its own). Likewise the redirect to the
 * object path of that digest.
 */
const VALUE_OWN_METACOPY = 4;
const VALUE_OWN_REDIRECT = 5;

/** One distinct xattr; every inode that carries it points to this record. */
export interface Xattr {
  key: XattrKey;
  kind: number;
  bytes: Buffer | null;
  /**
   * What makes two values of this key equal: canonical base64 of the bytes for
   * VALUE_BYTES, the canonical text for the others (a key has only one kind).
   */
  identity: string;
  valueSize: number;
  /** Bytes of the on-disk entry, 4-aligned. */
  entrySize: number;
  /** Inodes that carry it, counted once the tree is final. */
  count: number;
  /** Byte offset in the shared xattr area, or -1: chosen once the tree is final. */
  sharedOffset: number;
}

/** Interns keys and xattrs for one image. */
export class XattrTable {
  private readonly keysByText = new Map<string, XattrKey>();
  /** The redirects to object paths, by identity (apart from key.values: a backing path may itself be 64 hex digits). */
  private readonly objectRedirects = new Map<string, Xattr>();
  readonly keys: XattrKey[] = [];

  constructor(readonly codec: TextCodec) {}

  /** A key, as a string of the codec: one string per byte string, so equal keys meet here. */
  key(text: string): XattrKey {
    let k = this.keysByText.get(text);
    if (!k) {
      k = newKey(text, this.codec);
      this.keys.push(k);
      this.keysByText.set(text, k);
    }
    return k;
  }

  /** The key trusted.overlay.X becomes: trusted.overlay.overlay.X. */
  escapedKey(k: XattrKey): XattrKey {
    return (k.escaped ??= this.key(OVERLAY_ESCAPE_PREFIX + k.text.slice(OVERLAY_PREFIX.length)));
  }

  /** A value given in canonical base64 (checkManifest made sure of that). */
  fromBase64(key: XattrKey, base64: string): Xattr {
    const x = key.values.get(base64);
    return x ?? this.add(key, VALUE_BYTES, base64, Buffer.from(base64, 'base64'));
  }

  fromBytes(key: XattrKey, bytes: Buffer): Xattr {
    return this.fromBase64(key, bytes.toString('base64'));
  }

  /**
   * The redirect to `backing`, of a file whose metacopy is `metacopy`: when
   * the backing is the object path of its digest, the digest's string is the
   * identity.
   */
  redirect(key: XattrKey, backing: string, metacopy: Xattr): Xattr {
    const identity = objectIdentity(backing, metacopy.identity);
    if (identity === undefined) return key.values.get(backing) ?? this.add(key, VALUE_REDIRECT, backing, null);
    return this.objectRedirect(key, identity);
  }

  /** The redirect to the object path of a digest (its 64 digits). */
  objectRedirect(key: XattrKey, identity: string): Xattr {
    return this.objectRedirects.get(identity) ?? this.add(key, VALUE_OBJECT_REDIRECT, identity, null);
  }

  /** The one record of the image that stands for every file's own metacopy (VALUE_OWN_METACOPY). */
  ownMetacopy(key: XattrKey): Xattr {
    return ownRecord(key, VALUE_OWN_METACOPY, 4 + 32);
  }

  /** The one record that stands for every file's own redirect (VALUE_OWN_REDIRECT): "/ab/cdef...". */
  ownRedirect(key: XattrKey): Xattr {
    return ownRecord(key, VALUE_OWN_REDIRECT, 2 + 64);
  }

  metacopy(key: XattrKey, digest: string | undefined): Xattr {
    const given = digest ?? NO_DIGEST;
    const x = key.values.get(given);
    if (x) return x;
    const identity = digest === undefined || isLowerHex64(digest) ? given : Buffer.from(digest, 'hex').toString('hex');
    return (identity !== given && key.values.get(identity)) || this.add(key, VALUE_METACOPY, identity, null, given);
  }

  private add(key: XattrKey, kind: number, identity: string, bytes: Buffer | null, alias?: string): Xattr {
    const valueSize =
      kind === VALUE_BYTES ? bytes!.length
      : kind === VALUE_REDIRECT ? 1 + key.codec.length(identity)
      : kind === VALUE_OBJECT_REDIRECT ? 2 + identity.length
      : identity === NO_DIGEST ? 0 : 4 + identity.length / 2;
    const x: Xattr = {
      key, kind, bytes, identity, valueSize, count: 0, sharedOffset: -1,
      entrySize: roundUp(EROFS_XATTR_ENTRY_SIZE + key.suffix.length + valueSize, 4),
    };
    if (kind === VALUE_OBJECT_REDIRECT) this.objectRedirects.set(identity, x);
    else key.values.set(identity, x);
    if (alias !== undefined && alias !== identity) key.values.set(alias, x);
    return x;
  }
}

/**
 * The identity of a redirect to `backing` when it is an object path ("ab/cdef...",
 * lowercase): its 64 digits, as the string `digits` when they are those. Undefined otherwise.
 */
export function objectIdentity(backing: string, digits: string): string | undefined {
  if (isObjectPathOf(backing, digits)) return digits;
  return isObjectPath(backing) ? backing.slice(0, 2) + backing.slice(3) : undefined;
}

function ownRecord(key: XattrKey, kind: number, valueSize: number): Xattr {
  return {
    key, kind, bytes: null, identity: '', valueSize, count: 0, sharedOffset: -1,
    entrySize: roundUp(EROFS_XATTR_ENTRY_SIZE + key.suffix.length + valueSize, 4),
  };
}

/** Whether a record stands for a value of the inode that carries it (never shared). */
export function isOwnValue(x: Xattr): boolean {
  return x.kind >= VALUE_OWN_METACOPY;
}

function newKey(text: string, codec: TextCodec): XattrKey {
  const bytes = codec.bytes(text);
  let prefixIndex = 0;
  let suffix = bytes;
  for (const [prefix, index] of EROFS_XATTR_WRITE_PREFIXES) {
    if (text.startsWith(prefix)) {
      prefixIndex = index;
      suffix = bytes.subarray(prefix.length); // the prefixes are ASCII: as many bytes as chars in either codec
      break;
    }
  }
  return {
    text, codec, bytes, prefixIndex, suffix, rank: 0, values: new Map(), escaped: null,
    filterBit: xxh32(suffix, (EROFS_XATTR_FILTER_SEED + prefixIndex) >>> 0) & (EROFS_XATTR_FILTER_BITS - 1),
    isAcl: text === 'system.posix_acl_access' || text === 'system.posix_acl_default',
  };
}

/** "/ab/cdef..." from the 64 digits "abcdef...", at `at`. */
function encodeObjectRedirect(digits: string, buf: Buffer, at: number): void {
  buf[at] = 0x2f;
  buf[at + 1] = digits.charCodeAt(0);
  buf[at + 2] = digits.charCodeAt(1);
  buf[at + 3] = 0x2f;
  for (let i = 2; i < digits.length; i++) buf[at + 2 + i] = digits.charCodeAt(i);
}

/** struct ovl_metacopy's header: version 0, length, flags, digest algorithm (the digest follows). */
function encodeMetacopyHeader(size: number, buf: Buffer, at: number): void {
  buf[at] = 0;
  buf[at + 1] = size & 0xff;
  buf[at + 2] = 0;
  buf[at + 3] = FSVERITY_HASH_ALG_SHA256;
}

/**
 * The value bytes of an xattr, encoded at `at`; `own` holds the digest
 * (`ownDigest`) of the file that carries it, for its own metacopy and redirect.
 */
function encodeXattrValue(x: Xattr, buf: Buffer, at: number, own: DigestPool<unknown> | null, ownDigest: number): void {
  if (x.kind === VALUE_BYTES) {
    buf.set(x.bytes!, at);
  } else if (x.kind === VALUE_REDIRECT) {
    buf[at] = 0x2f; // "/"
    x.key.codec.write(buf, at + 1, x.identity, x.valueSize - 1);
  } else if (x.kind === VALUE_OBJECT_REDIRECT) {
    encodeObjectRedirect(x.identity, buf, at);
  } else if (x.kind === VALUE_OWN_REDIRECT) {
    buf[at] = 0x2f;
    own!.writeHex(ownDigest, buf, at + 1, true);
  } else if (x.kind === VALUE_OWN_METACOPY) {
    encodeMetacopyHeader(x.valueSize, buf, at);
    own!.copyTo(ownDigest, buf, at + 4);
  } else if (x.valueSize > 0) {
    encodeMetacopyHeader(x.valueSize, buf, at);
    buf.write(x.identity, at + 4, 'hex');
  }
}

export function xattrValueBytes(x: Xattr): Buffer {
  if (x.bytes) return x.bytes;
  if (isOwnValue(x)) throw new Error('composefs writer: a file\'s own xattr has no bytes apart from the file');
  const b = Buffer.alloc(x.valueSize);
  encodeXattrValue(x, b, 0, null, -1);
  return b;
}


/**
 * One xattr entry (header, key suffix, value) at `at`; its padding stays zero.
 * `own` and `ownDigest`: the pool and id of the digest of the file that
 * carries it, for its own metacopy and redirect.
 */
export function encodeXattrEntry(buf: Buffer, at: number, x: Xattr, own: DigestPool<unknown> | null = null, ownDigest = -1): void {
  const suffix = x.key.suffix;
  XATTR_ENTRY.nameLength.write(buf, at, suffix.length);
  XATTR_ENTRY.nameIndex.write(buf, at, x.key.prefixIndex);
  XATTR_ENTRY.valueSize.write(buf, at, x.valueSize);
  buf.set(suffix, at + EROFS_XATTR_ENTRY_SIZE);
  encodeXattrValue(x, buf, at + EROFS_XATTR_ENTRY_SIZE + suffix.length, own, ownDigest);
}

export function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/** The overlay xattrs the image needs, made once per image. */
export class OverlayXattrs {
  readonly metacopyKey: XattrKey;
  readonly redirectKey: XattrKey;
  /** What stands for a file's own metacopy and redirect (see VALUE_OWN_METACOPY). */
  readonly ownMetacopy: Xattr;
  readonly ownRedirect: Xattr;
  readonly escapedWhiteout: Xattr;
  readonly userWhiteout: Xattr;
  readonly escapedWhiteouts: Xattr;
  readonly userWhiteouts: Xattr;
  readonly escapedOpaque: Xattr;
  readonly userOpaque: Xattr;
  readonly opaque: Xattr;
  constructor(readonly table: XattrTable) {
    const empty = Buffer.alloc(0);
    const x = Buffer.from('x');
    this.metacopyKey = table.key(OVERLAY_METACOPY);
    this.redirectKey = table.key(OVERLAY_REDIRECT);
    this.ownMetacopy = table.ownMetacopy(this.metacopyKey);
    this.ownRedirect = table.ownRedirect(this.redirectKey);
    this.escapedWhiteout = table.fromBytes(table.key(OVERLAY_ESCAPED_WHITEOUT), empty);
    this.userWhiteout = table.fromBytes(table.key(OVERLAY_USER_WHITEOUT), empty);
    this.escapedWhiteouts = table.fromBytes(table.key(OVERLAY_ESCAPED_WHITEOUTS), empty);
    this.userWhiteouts = table.fromBytes(table.key(OVERLAY_USER_WHITEOUTS), empty);
    this.escapedOpaque = table.fromBytes(table.key(OVERLAY_ESCAPED_OPAQUE), x);
    this.userOpaque = table.fromBytes(table.key(OVERLAY_USER_OPAQUE), x);
    this.opaque = table.fromBytes(table.key(OVERLAY_OPAQUE), Buffer.from('y'));
  }

  /** A user's trusted.overlay.X, as the image stores it: trusted.overlay.overlay.X. */
  escaped(x: Xattr): Xattr {
    const key = this.table.escapedKey(x.key);
    return x.kind === VALUE_BYTES ? this.table.fromBase64(key, x.identity) : this.table.fromBytes(key, xattrValueBytes(x));
  }
}

/** Whether a key is one of overlayfs's own, which a user's xattr may not be stored as. */
export function isOverlayKey(k: XattrKey): boolean {
  return k.text.startsWith(OVERLAY_PREFIX);
}
