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

function isDash(field: Buffer): boolean {
  return field.length === 1 && field[0] === 0x2d;
}

function optionalField(field: Buffer): Buffer | null {
  return isDash(field) ? null : unescapeField(field);
}

function parseDecimal(field: Buffer, what: string, max: bigint): bigint {
  const s = field.toString('latin1');
  if (!/^[0-9]+$/.test(s)) throw new Error(`${what} "${s}" is not a decimal number`);
  const v = BigInt(s);
  if (v > max) throw new Error(`${what} ${s} is too large: at most ${max}`);
  return v;
}

function parseU32(field: Buffer, what: string): number {
  return Number(parseDecimal(field, what, BigInt(U32_MAX)));
}

function parseMode(field: Buffer): { mode: number; hardlink: boolean } {
  let text = field.toString('latin1');
  const hardlink = text.startsWith('@');
  if (hardlink) text = text.slice(1);
  if (!/^[0-7]+$/.test(text)) throw new Error(`mode "${text}" is not an octal number`);
  const mode = Number.parseInt(text, 8);
  if (!VALID_TYPES.has(mode & S_IFMT)) throw new Error(`mode ${text} has no valid file type (S_IFMT bits)`);
  return { mode, hardlink };
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

function parseLine(line: Buffer, strict: boolean): DumpEntry {
  const nul = line.indexOf(0);
  if (nul >= 0) throw new Error(`embedded NUL byte at column ${nul + 1}`);
  const fields: Buffer[] = [];
  let rest: Buffer | null = line;
  for (let i = 0; i < FIELD_COUNT; i++) {
    if (rest === null) {
      fields.push(Buffer.alloc(0));
      continue;
    }
    const [field, next]: [Buffer, Buffer | null] = splitAt(rest, SPACE);
    fields.push(field);
    rest = next;
  }
  const [pathF, sizeF, modeF, nlinkF, uidF, gidF, rdevF, mtimeF, payloadF, contentF, digestF] = fields as [
    Buffer, Buffer, Buffer, Buffer, Buffer, Buffer, Buffer, Buffer, Buffer, Buffer, Buffer,
  ];

  const path = unescapeField(pathF);
  if (path.length === 0) throw new Error('empty path');
  const { mode, hardlink } = parseMode(modeF);

  if (hardlink) {
    // Only the target matters for a hardlink line; the rest repeats the target.
    const payload = optionalField(payloadF);
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
  const size = parseDecimal(sizeF, 'size', U64_MAX);
  const nlink = parseU32(nlinkF, 'nlink');
  const uid = parseU32(uidF, 'uid');
  const gid = parseU32(gidF, 'gid');
  const rdev = parseU32(rdevF, 'rdev');
  const [secF, nsecF] = splitAt(mtimeF, 0x2e);
  if (nsecF === null) throw new Error(`mtime "${mtimeF.toString('latin1')}" is not SECONDS.NANOSECONDS`);
  const mtimeSec = parseDecimal(secF, 'mtime seconds', I64_MAX);
  const mtimeNsec = parseU32(nsecF, 'mtime nanoseconds');
  if (strict && mtimeNsec > 999_999_999) throw new Error(`mtime nanoseconds ${mtimeNsec} is not below 1000000000`);
  const payload = optionalField(payloadF);
  const content = optionalField(contentF);
  const digestText = optionalField(digestF);

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
  // mkcomposefs ignores a digest it cannot decode on anything but a regular file.
  const ignoredDigest = !strict && digestText !== null && type !== S_IFREG && !/^[0-9a-fA-F]{64}$/.test(digestText.toString('latin1'));
  if (digestText !== null && !ignoredDigest) {
    const d = digestText.toString('latin1');
    if (!/^[0-9a-fA-F]{64}$/.test(d)) throw new Error(`digest "${d.slice(0, 80)}" is not 64 hex characters`);
    if (strict && d !== d.toLowerCase()) throw new Error(`digest "${d}" must be lowercase hex`);
    digest = d.toLowerCase();
  }
  const xattrs = parseXattrs(rest ?? Buffer.alloc(0), strict);
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
  let start = 0;
  let lineNo = 0;
  while (start < data.length) {
    lineNo++;
    let end = data.indexOf(NEWLINE, start);
    const terminated = end >= 0;
    if (!terminated) end = data.length;
    try {
      entries.push(parseLine(data.subarray(start, end), strict));
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
