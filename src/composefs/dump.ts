// The composefs dump format (composefs-dump(5)): one line per file, eleven
// space-separated fields (path, size, mode, nlink, uid, gid, rdev, mtime,
// payload, content, digest) then KEY=VALUE xattrs, with \xNN, \\, \n, \r, \t
// escapes and "-" for an absent optional field. parseDump reads what mkcomposefs
// reads; serializeDump writes what `composefs-info dump` writes, so text we
// produce is byte-identical to the tools'.
//
// Strict mode (the default) also refuses what mkcomposefs only tolerates: a
// missing final newline, a symlink whose SIZE is not its target length or that
// has CONTENT, and a non-zero RDEV on something that is not a device. Lenient
// mode accepts those; the converter then drops the ignored values.
import { InvalidManifestError } from '../manifest/errors.js';
import { loneSurrogateIndex } from '../manifest/text.js';
import { COMPOSEFS_INLINE_MAX, PATH_MAX, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK } from './format.js';

export interface DumpXattr {
  key: Buffer;
  value: Buffer;
}

/** One dump line, decoded. Byte strings stay bytes: the format is binary-safe. */
export interface DumpEntry {
  path: Buffer;
  size: bigint;
  /** Full st_mode: file type and permission bits. */
  mode: number;
  /** Line of a hardlink ("@" before MODE): payload is the target path, other fields are copies. */
  hardlink: boolean;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  mtimeSec: bigint;
  mtimeNsec: number;
  /** Symlink target, backing file of a regular file, or hardlink target. */
  payload: Buffer | null;
  content: Buffer | null;
  /** 64 lowercase hex characters. */
  digest: string | null;
  xattrs: DumpXattr[];
}

export interface DumpParseOptions {
  /** Default true. */
  strict?: boolean;
  /** Accept a last line without newline even when strict (the caller checks it later). */
  allowMissingFinalNewline?: boolean;
}

const FIELD_COUNT = 11;
/** mkcomposefs caps the xattr part of a line (its duplicate search is quadratic). */
const MAX_XATTR_TEXT = 65535;
const U32_MAX = 0xffffffff;
const I64_MAX = (1n << 63n) - 1n;
const U64_MAX = (1n << 64n) - 1n;
const VALID_TYPES = new Set([S_IFREG, S_IFDIR, S_IFLNK, S_IFBLK, S_IFCHR, S_IFSOCK, S_IFIFO]);

const BACKSLASH = 0x5c;
const NEWLINE = 0x0a;
const SPACE = 0x20;
const EQUALS = 0x3d;

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

/** Decodes the escapes of one field. */
export function unescapeField(field: Buffer): Buffer {
  if (!field.includes(BACKSLASH)) return field;
  const out = Buffer.allocUnsafe(field.length);
  let o = 0;
  for (let i = 0; i < field.length; i++) {
    const c = field[i]!;
    if (c !== BACKSLASH) {
      out[o++] = c;
      continue;
    }
    if (i + 1 >= field.length) throw new Error('a backslash ends the field: escape it as \\\\');
    const e = field[++i]!;
    if (e === BACKSLASH) out[o++] = BACKSLASH;
    else if (e === 0x6e) out[o++] = 0x0a; // n
    else if (e === 0x72) out[o++] = 0x0d; // r
    else if (e === 0x74) out[o++] = 0x09; // t
    else if (e === 0x78) {
      // x
      const h = hexValue(field[i + 1] ?? -1);
      const l = hexValue(field[i + 2] ?? -1);
      if (h < 0 || l < 0) throw new Error('\\x needs two hex digits');
      out[o++] = (h << 4) | l;
      i += 2;
    } else throw new Error(`unsupported escape \\${String.fromCharCode(e)}: use \\xNN, \\\\, \\n, \\r or \\t`);
  }
  return out.subarray(0, o);
}

/** A decimal field of `data` [start, end), read without making a string; at most `max`. */
function parseDecimal(data: Buffer, start: number, end: number, what: string, max: bigint): bigint {
  const n = parseSmallDecimal(data, start, end, what);
  if (n <= Number.MAX_SAFE_INTEGER) {
    const v = BigInt(n);
    if (v <= max) return v;
  }
  const text = data.toString('latin1', start, end);
  const v = BigInt(text);
  if (v > max) throw new Error(`${what} ${text} is too large: at most ${max}`);
  return v;
}

/** The digits of [start, end) as a number (exact up to 2^53; beyond, only good for a comparison). */
function parseSmallDecimal(data: Buffer, start: number, end: number, what: string): number {
  if (start === end) throw new Error(`${what} "" is not a decimal number`);
  let n = 0;
  for (let i = start; i < end; i++) {
    const d = data[i]! - 0x30;
    if (d < 0 || d > 9) throw new Error(`${what} "${data.toString('latin1', start, end)}" is not a decimal number`);
    n = n * 10 + d;
  }
  return n;
}

function parseU32(data: Buffer, start: number, end: number, what: string): number {
  const n = parseSmallDecimal(data, start, end, what);
  if (n > U32_MAX) throw new Error(`${what} ${data.toString('latin1', start, end)} is too large: at most ${U32_MAX}`);
  return n;
}

function parseMode(field: Buffer): { mode: number; hardlink: boolean } {
  const hardlink = field[0] === 0x40; // "@"
  let mode = 0;
  const first = hardlink ? 1 : 0;
  for (let i = first; i < field.length; i++) {
    const d = field[i]! - 0x30;
    if (d < 0 || d > 7) {
      throw new Error(`mode "${field.toString('latin1', first, field.length)}" is not an octal number`);
    }
    mode = mode * 8 + d;
  }
  if (field.length === first) throw new Error('mode "" is not an octal number');
  // Beyond 2^53 the digits no longer add up exactly: parse as parseInt does.
  if (field.length - first > 17) mode = Number.parseInt(field.toString('latin1', first, field.length), 8);
  if (!VALID_TYPES.has(mode & S_IFMT)) throw new Error(`mode ${field.toString('latin1', first, field.length)} has no valid file type (S_IFMT bits)`);
  return { mode, hardlink };
}

/** Whether [start, end) of `data` is 64 hex digits. */
function isHex64(data: Uint8Array, start: number, end: number): boolean {
  if (end - start !== 64) return false;
  for (let i = start; i < end; i++) if (hexValue(data[i]!) < 0) return false;
  return true;
}

/** Splits at the first `sep`; the rest is null when there is none. */
function splitAt(data: Buffer, sep: number): [Buffer, Buffer | null] {
  const i = data.indexOf(sep);
  return i < 0 ? [data, null] : [data.subarray(0, i), data.subarray(i + 1)];
}

function parseXattrs(rest: Buffer, strict: boolean): DumpXattr[] {
  if (rest.length > MAX_XATTR_TEXT) throw new Error(`the xattrs take ${rest.length} bytes of text, more than ${MAX_XATTR_TEXT}`);
  const xattrs: DumpXattr[] = [];
  let remaining: Buffer | null = rest;
  while (remaining !== null && remaining.length > 0) {
    const [item, next]: [Buffer, Buffer | null] = splitAt(remaining, SPACE);
    remaining = next;
    const [rawKey, rawValue] = splitAt(item, EQUALS);
    if (rawValue === null) throw new Error(`xattr "${item.toString('latin1').slice(0, 40)}" has no "="`);
    const key = unescapeField(rawKey);
    const value = unescapeField(rawValue);
    const existing = xattrs.findIndex((x) => x.key.equals(key));
    if (existing >= 0) {
      if (strict) throw new Error(`xattr ${key.toString('latin1')} appears twice`);
      xattrs.splice(existing, 1); // as mkcomposefs: the last value wins
    }
    xattrs.push({ key, value });
  }
  return xattrs;
}

/** Field boundaries of the current line: start and end of each of the eleven fields. */
const bounds = new Int32Array(FIELD_COUNT * 2);

/** Parses the line data[start, end); `nul` is the first NUL byte of the data (-1 for none). */
function parseLine(data: Buffer, start: number, end: number, nul: number, strict: boolean): DumpEntry {
  if (nul >= start && nul < end) throw new Error(`embedded NUL byte at column ${nul - start + 1}`);
  let at = start;
  for (let i = 0; i < FIELD_COUNT; i++) {
    if (at > end) {
      bounds[2 * i] = bounds[2 * i + 1] = end;
      continue;
    }
    let space = at;
    while (space < end && data[space] !== SPACE) space++;
    bounds[2 * i] = at;
    bounds[2 * i + 1] = space;
    at = space + 1;
  }
  const rest = Math.min(at, end); // where the xattrs begin
  const field = (i: number): Buffer => data.subarray(bounds[2 * i]!, bounds[2 * i + 1]!);
  const isDashAt = (i: number): boolean => bounds[2 * i + 1]! - bounds[2 * i]! === 1 && data[bounds[2 * i]!] === 0x2d;
  const optional = (i: number): Buffer | null => (isDashAt(i) ? null : unescapeField(field(i)));

  const path = unescapeField(field(0));
  if (path.length === 0) throw new Error('empty path');
  const { mode, hardlink } = parseMode(field(2));

  if (hardlink) {
    // Only the target matters for a hardlink line; the rest repeats the target.
    const payload = optional(8);
    if (payload === null || payload.length === 0) throw new Error('hardlink has no target path in the PAYLOAD field');
    if ((mode & S_IFMT) === S_IFDIR) throw new Error('a directory cannot be a hardlink');
    return {
      path, size: 0n, mode, hardlink, nlink: 0, uid: 0, gid: 0, rdev: 0, mtimeSec: 0n, mtimeNsec: 0,
      payload, content: null, digest: null, xattrs: [],
    };
  }

  const type = mode & S_IFMT;
  // mkcomposefs keeps the low 16 bits (the on-disk i_mode); only lenient parsing allows more.
  if (strict && mode > 0o177777) throw new Error(`mode ${mode.toString(8)} has bits beyond st_mode`);
  const size = parseDecimal(data, bounds[2]!, bounds[3]!, 'size', U64_MAX);
  const nlink = parseU32(data, bounds[6]!, bounds[7]!, 'nlink');
  const uid = parseU32(data, bounds[8]!, bounds[9]!, 'uid');
  const gid = parseU32(data, bounds[10]!, bounds[11]!, 'gid');
  const rdev = parseU32(data, bounds[12]!, bounds[13]!, 'rdev');
  const mtimeStart = bounds[14]!;
  const mtimeEnd = bounds[15]!;
  const dot = data.indexOf(0x2e, mtimeStart);
  if (dot < 0 || dot >= mtimeEnd) throw new Error(`mtime "${data.toString('latin1', mtimeStart, mtimeEnd)}" is not SECONDS.NANOSECONDS`);
  const mtimeSec = parseDecimal(data, mtimeStart, dot, 'mtime seconds', I64_MAX);
  const mtimeNsec = parseU32(data, dot + 1, mtimeEnd, 'mtime nanoseconds');
  if (strict && mtimeNsec > 999_999_999) throw new Error(`mtime nanoseconds ${mtimeNsec} is not below 1000000000`);
  const payload = optional(8);
  const content = optional(9);

  if (content !== null && BigInt(content.length) !== size) {
    throw new Error(`content has ${content.length} bytes but SIZE says ${size}`);
  }
  if (payload !== null && payload.length >= PATH_MAX) throw new Error(`payload is ${payload.length} bytes long, at most ${PATH_MAX - 1}`);
  if (type === S_IFLNK) {
    if (payload === null || payload.length === 0) throw new Error('symlink has no target in the PAYLOAD field');
    if (strict && size !== BigInt(payload.length)) {
      throw new Error(`symlink SIZE ${size} is not the length of its target (${payload.length})`);
    }
    if (strict && content !== null && content.length > 0) throw new Error('a symlink cannot have CONTENT');
  } else if (content !== null && content.length > COMPOSEFS_INLINE_MAX) {
    throw new Error(`inline content of ${content.length} bytes exceeds the maximum ${COMPOSEFS_INLINE_MAX}`);
  }
  if (strict && rdev !== 0 && type !== S_IFCHR && type !== S_IFBLK) {
    throw new Error(`RDEV ${rdev} on something that is not a device`);
  }
  let digest: string | null = null;
  if (!isDashAt(10)) {
    const digestText = optional(10)!;
    const hex = isHex64(digestText, 0, digestText.length);
    // mkcomposefs ignores a digest it cannot decode on anything but a regular file.
    if (hex || strict || type === S_IFREG) {
      const d = digestText.toString('latin1', 0, digestText.length);
      if (!hex) throw new Error(`digest "${d.slice(0, 80)}" is not 64 hex characters`);
      digest = d.toLowerCase();
      if (strict && d !== digest) throw new Error(`digest "${d}" must be lowercase hex`);
    }
  }
  const xattrs = rest < end ? parseXattrs(data.subarray(rest, end), strict) : [];
  return { path, size, mode, hardlink, nlink, uid, gid, rdev, mtimeSec, mtimeNsec, payload, content, digest, xattrs };
}

/** True when the text ends with a newline (or is empty), as strict parsing requires. */
export function endsWithNewline(text: Buffer): boolean {
  return text.length === 0 || text[text.length - 1] === NEWLINE;
}

/** The bytes of dump text given as a string: its UTF-8, refused when it has none (a lone surrogate). */
export function dumpBytes(text: Buffer | string): Buffer {
  if (typeof text !== 'string') return text;
  const bad = loneSurrogateIndex(text);
  if (bad >= 0) {
    const line = text.slice(0, bad).split('\n').length;
    throw new InvalidManifestError(`holds a lone UTF-16 surrogate (\\u${text.charCodeAt(bad).toString(16).toUpperCase()}), which has no UTF-8 bytes: escape bytes as \\xNN`, `line ${line}`);
  }
  return Buffer.from(text, 'utf8');
}

/** Parses a whole dump. Errors are InvalidManifestError with pointer "line N". */
export function parseDump(text: Buffer | string, options: DumpParseOptions = {}): DumpEntry[] {
  const strict = options.strict ?? true;
  const data = dumpBytes(text);
  const entries: DumpEntry[] = [];
  const nul = data.indexOf(0);
  let start = 0;
  let lineNo = 0;
  while (start < data.length) {
    lineNo++;
    let end = data.indexOf(NEWLINE, start);
    const terminated = end >= 0;
    if (!terminated) end = data.length;
    try {
      entries.push(parseLine(data, start, end, nul, strict));
    } catch (err) {
      throw new InvalidManifestError((err as Error).message, `line ${lineNo}`);
    }
    // Checked after the line itself, so a broken last line reports its real problem.
    if (!terminated && strict && !options.allowMissingFinalNewline) throw new InvalidManifestError('the last line has no newline (lenient parsing accepts that)', `line ${lineNo}`);
    start = end + 1;
  }
  if (entries.length === 0) throw new InvalidManifestError('the dump has no entries', 'line 1');
  return entries;
}

// ---- writing ----------------------------------------------------------------------

const ESCAPE_EQUAL = 1;
const ESCAPE_LONE_DASH = 2;
const HEX = '0123456789abcdef';

function needsEscape(c: number, flags: number): boolean {
  if (c < 0x21 || c > 0x7e) return true;
  if (c === BACKSLASH) return true;
  return c === EQUALS && (flags & ESCAPE_EQUAL) !== 0;
}

/** Escapes like composefs-info: graphic ASCII stays, the rest becomes \xNN. */
export function escapeField(value: Uint8Array, flags = 0): string {
  if ((flags & ESCAPE_LONE_DASH) !== 0 && value.length === 1 && value[0] === 0x2d) return '\\x2d';
  let plain = true;
  for (let i = 0; i < value.length; i++) {
    if (needsEscape(value[i]!, flags)) {
      plain = false;
      break;
    }
  }
  if (plain) return Buffer.from(value.buffer, value.byteOffset, value.length).toString('latin1');
  let out = '';
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (c === BACKSLASH) out += '\\\\';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0d) out += '\\r';
    else if (c === 0x09) out += '\\t';
    else if (needsEscape(c, flags)) out += '\\x' + HEX[c >> 4]! + HEX[c & 15]!;
    else out += String.fromCharCode(c);
  }
  return out;
}

function optionalText(value: Uint8Array | null): string {
  return value === null ? '-' : escapeField(value, ESCAPE_LONE_DASH);
}

/** One line, without its newline. */
export function serializeDumpLine(e: DumpEntry): string {
  let line =
    `${escapeField(e.path)} ${e.size} ${e.hardlink ? '@' : ''}${e.mode.toString(8)} ${e.nlink} ${e.uid} ${e.gid} ${e.rdev} ` +
    `${e.mtimeSec}.${e.mtimeNsec} ${optionalText(e.payload)} ${optionalText(e.content)} ${e.digest ?? '-'}`;
  for (const x of e.xattrs) line += ` ${escapeField(x.key, ESCAPE_EQUAL)}=${escapeField(x.value, ESCAPE_EQUAL)}`;
  return line;
}

/** The whole dump text: escaped fields are ASCII, so latin1 is exact. */
export function serializeDump(entries: Iterable<DumpEntry>): Buffer {
  const parts: string[] = [];
  for (const e of entries) parts.push(serializeDumpLine(e), '\n');
  return Buffer.from(parts.join(''), 'latin1');
}
