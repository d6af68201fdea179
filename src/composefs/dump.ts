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
import type { DigestPool } from './digests.js';
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

/**
 * A decimal field of `data` [start, end), read without making a string; at
 * most `max` (both callers' limits are beyond 2^53): a number when it is a
 * safe integer, a bigint beyond.
 */
function parseDecimal(data: Buffer, start: number, end: number, what: string, max: bigint): number | bigint {
  const n = parseSmallDecimal(data, start, end, what);
  if (n <= Number.MAX_SAFE_INTEGER) return n;
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

/** The MODE field data[start, end), its "@" of a hardlink skipped, as a number. */
function parseMode(data: Buffer, start: number, end: number): number {
  const first = data[start] === 0x40 ? start + 1 : start; // "@"
  let mode = 0;
  for (let i = first; i < end; i++) {
    const d = data[i]! - 0x30;
    if (d < 0 || d > 7) {
      throw new Error(`mode "${data.toString('latin1', first, end)}" is not an octal number`);
    }
    mode = mode * 8 + d;
  }
  if (end === first) throw new Error('mode "" is not an octal number');
  // Beyond 2^53 the digits no longer add up exactly: parse as parseInt does.
  if (end - first > 17) mode = Number.parseInt(data.toString('latin1', first, end), 8);
  if (!VALID_TYPES.has(mode & S_IFMT)) throw new Error(`mode ${data.toString('latin1', first, end)} has no valid file type (S_IFMT bits)`);
  return mode;
}

/** What a byte is as a digest digit: HEX_LOWER (0-9, a-f), HEX_UPPER (A-F), or 0. */
const HEX_LOWER = 1;
const HEX_UPPER = 2;
const HEX_CLASS = new Uint8Array(256);
for (let c = 0x30; c <= 0x39; c++) HEX_CLASS[c] = HEX_LOWER;
for (let c = 0x61; c <= 0x66; c++) HEX_CLASS[c] = HEX_LOWER;
for (let c = 0x41; c <= 0x46; c++) HEX_CLASS[c] = HEX_UPPER;

/**
 * [start, end) of `data` as a digest, in one pass (a dump has one digest a
 * file): 0 when it is not 64 hex digits, else HEX_LOWER, or HEX_LOWER |
 * HEX_UPPER when an upper-case letter is among them.
 */
function hex64Class(data: Uint8Array, start: number, end: number): number {
  if (end - start !== 64) return 0;
  let seen = HEX_LOWER;
  for (let i = start; i < end; i++) {
    const c = HEX_CLASS[data[i]!]!;
    if (c === 0) return 0;
    seen |= c;
  }
  return seen;
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

/** The byte fields a table keeps as ranges of the text (still escaped), in DumpTable.ranges. */
const PATH = 0;
const PAYLOAD = 1;
const CONTENT = 2;
const DIGEST = 3;
const XATTRS = 4;
const RANGES = 5;

/**
 * A parsed dump as columns, one row per line, with no object per line: the
 * numbers in typed arrays, the byte fields (path, payload, content, digest,
 * xattrs) as [start, end) ranges of the text, decoded when asked for. That is
 * what a large dump costs to hold while its tree is built (dump-tree.ts):
 * about 90 bytes a line outside the JavaScript heap, instead of the dozen
 * objects a DumpEntry is. parseDump gives the same lines as DumpEntry objects.
 * A hardlink row has only its path and payload; its numbers are 0.
 */
export class DumpTable {
  readonly count: number;
  /** Full st_mode (more than 16 bits only in a lenient parse). */
  readonly mode: Float64Array;
  readonly hardlink: Uint8Array;
  readonly nlink: Uint32Array;
  readonly uid: Uint32Array;
  readonly gid: Uint32Array;
  readonly rdev: Uint32Array;
  readonly mtimeNsec: Uint32Array;
  /** SIZE and the mtime's seconds when they are safe integers; the rows whose are not have them in `large`. */
  private readonly sizeNumber: Float64Array;
  private readonly mtimeSecNumber: Float64Array;
  private readonly large = new Map<number, { size: bigint; mtimeSec: bigint }>();
  /** [start, end) in `data` of each byte field of each row (RANGES per row); start -1 for "-" or none. */
  private readonly ranges: Int32Array;

  constructor(readonly data: Buffer, count: number, readonly strict: boolean) {
    this.count = count;
    this.mode = new Float64Array(count);
    this.hardlink = new Uint8Array(count);
    this.nlink = new Uint32Array(count);
    this.uid = new Uint32Array(count);
    this.gid = new Uint32Array(count);
    this.rdev = new Uint32Array(count);
    this.mtimeNsec = new Uint32Array(count);
    this.sizeNumber = new Float64Array(count);
    this.mtimeSecNumber = new Float64Array(count);
    this.ranges = new Int32Array(count * RANGES * 2).fill(-1);
  }

  setNumbers(row: number, size: number | bigint, mtimeSec: number | bigint): void {
    if (typeof size === 'bigint' || typeof mtimeSec === 'bigint') this.large.set(row, { size: BigInt(size), mtimeSec: BigInt(mtimeSec) });
    else {
      this.sizeNumber[row] = size;
      this.mtimeSecNumber[row] = mtimeSec;
    }
  }

  /** Whether the row's SIZE and mtime seconds are safe integers (sizeNumber and mtimeSecNumber give them exactly). */
  hasSafeNumbers(row: number): boolean {
    return !this.large.has(row);
  }
  size(row: number): bigint {
    return this.large.get(row)?.size ?? BigInt(this.sizeNumber[row]!);
  }
  mtimeSec(row: number): bigint {
    return this.large.get(row)?.mtimeSec ?? BigInt(this.mtimeSecNumber[row]!);
  }
  /** SIZE as a number: exact when hasSafeNumbers. */
  sizeNumberOf(row: number): number {
    return this.sizeNumber[row]!;
  }
  mtimeSecNumberOf(row: number): number {
    return this.mtimeSecNumber[row]!;
  }

  setRange(row: number, field: number, start: number, end: number): void {
    this.ranges[(row * RANGES + field) * 2] = start;
    this.ranges[(row * RANGES + field) * 2 + 1] = end;
  }

  /** A byte field, decoded (a view of the text when it has no escapes); null when absent. */
  private field(row: number, field: number): Buffer | null {
    const start = this.ranges[(row * RANGES + field) * 2]!;
    return start < 0 ? null : unescapeField(this.data.subarray(start, this.ranges[(row * RANGES + field) * 2 + 1]!));
  }
  path(row: number): Buffer {
    return this.field(row, PATH)!;
  }
  /** A symlink's target, a regular file's backing path or a hardlink's target. */
  payload(row: number): Buffer | null {
    return this.field(row, PAYLOAD);
  }
  content(row: number): Buffer | null {
    return this.field(row, CONTENT);
  }
  /** 64 lowercase hex characters, or null. */
  digest(row: number): string | null {
    const d = this.field(row, DIGEST);
    return d === null ? null : d.toString('latin1').toLowerCase();
  }
  /**
   * Stages the row's digest in `pool` (DigestPool.stageHex), read in place
   * unless escaped; false when the row has none.
   */
  stageDigest(row: number, pool: DigestPool<unknown>): boolean {
    const start = this.ranges[(row * RANGES + DIGEST) * 2]!;
    if (start < 0) return false;
    // The parse made sure of 64 hex digits: in place, only an escape fails.
    if (pool.stageHex(this.data, start, this.ranges[(row * RANGES + DIGEST) * 2 + 1]!)) return true;
    const d = this.field(row, DIGEST)!;
    return pool.stageHex(d, 0, d.length);
  }
  /**
   * Whether the row has no payload (0), a payload that is the staged digest's
   * object path in lowercase as written (1), or another (2: an escaped one
   * too, which the caller takes the general way).
   */
  payloadAgainstStaged(row: number, pool: DigestPool<unknown>): number {
    const start = this.ranges[(row * RANGES + PAYLOAD) * 2]!;
    if (start < 0) return 0;
    return pool.isStagedObjectPath(this.data, start, this.ranges[(row * RANGES + PAYLOAD) * 2 + 1]!) ? 1 : 2;
  }
  hasXattrs(row: number): boolean {
    return this.ranges[(row * RANGES + XATTRS) * 2]! >= 0;
  }
  /** The row's xattrs, parsed again from the text (the parse checked them). */
  xattrs(row: number): DumpXattr[] {
    const start = this.ranges[(row * RANGES + XATTRS) * 2]!;
    return start < 0 ? [] : parseXattrs(this.data.subarray(start, this.ranges[(row * RANGES + XATTRS) * 2 + 1]!), this.strict);
  }

  /** Row i as a DumpEntry. */
  entry(row: number): DumpEntry {
    return {
      path: this.path(row), size: this.size(row), mode: this.mode[row]!, hardlink: this.hardlink[row] === 1,
      nlink: this.nlink[row]!, uid: this.uid[row]!, gid: this.gid[row]!, rdev: this.rdev[row]!, mtimeSec: this.mtimeSec(row),
      mtimeNsec: this.mtimeNsec[row]!, payload: this.payload(row), content: this.content(row), digest: this.digest(row),
      xattrs: this.xattrs(row),
    };
  }

  entries(): DumpEntry[] {
    const out: DumpEntry[] = new Array(this.count);
    for (let i = 0; i < this.count; i++) out[i] = this.entry(i);
    return out;
  }
}

// The fields of the line being parsed, read through `bounds` by the helpers
// below (functions of the module rather than closures, so that a line costs no
// allocation when its fields have no escapes: most lines of a large dump).

/** Field i of the current line, as a view of the text. */
function fieldView(data: Buffer, i: number): Buffer {
  return data.subarray(bounds[2 * i]!, bounds[2 * i + 1]!);
}

/** Whether field i of the current line is "-" (absent). */
function isDashAt(data: Buffer, i: number): boolean {
  return bounds[2 * i + 1]! - bounds[2 * i]! === 1 && data[bounds[2 * i]!] === 0x2d;
}

/** Whether field i of the current line has an escape. */
function hasEscapeAt(data: Buffer, i: number): boolean {
  for (let at = bounds[2 * i]!; at < bounds[2 * i + 1]!; at++) if (data[at] === BACKSLASH) return true;
  return false;
}

/** The length of field i's bytes once unescaped (its escapes checked), without making them. */
function unescapedLengthAt(data: Buffer, i: number): number {
  return hasEscapeAt(data, i) ? unescapeField(fieldView(data, i)).length : bounds[2 * i + 1]! - bounds[2 * i]!;
}

/** The same for an optional field: -1 for "-". */
function optionalLengthAt(data: Buffer, i: number): number {
  return isDashAt(data, i) ? -1 : unescapedLengthAt(data, i);
}

/** Parses the line data[start, end) into row `row`; `nul` is the first NUL byte of the data (-1 for none). */
function parseLine(data: Buffer, start: number, end: number, nul: number, table: DumpTable, row: number): void {
  const strict = table.strict;
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

  if (unescapedLengthAt(data, 0) === 0) throw new Error('empty path');
  table.setRange(row, PATH, bounds[0]!, bounds[1]!);
  const mode = parseMode(data, bounds[4]!, bounds[5]!);
  table.mode[row] = mode;

  if (data[bounds[4]!] === 0x40) {
    // A hardlink ("@" before MODE): only the target matters; the rest repeats the target.
    if (optionalLengthAt(data, 8) <= 0) throw new Error('hardlink has no target path in the PAYLOAD field');
    if ((mode & S_IFMT) === S_IFDIR) throw new Error('a directory cannot be a hardlink');
    table.hardlink[row] = 1;
    table.setRange(row, PAYLOAD, bounds[16]!, bounds[17]!);
    return;
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
  const payloadLength = optionalLengthAt(data, 8);
  const contentLength = optionalLengthAt(data, 9);

  if (contentLength >= 0 && contentLength !== Number(size)) {
    throw new Error(`content has ${contentLength} bytes but SIZE says ${size}`);
  }
  if (payloadLength >= PATH_MAX) throw new Error(`payload is ${payloadLength} bytes long, at most ${PATH_MAX - 1}`);
  if (type === S_IFLNK) {
    if (payloadLength <= 0) throw new Error('symlink has no target in the PAYLOAD field');
    if (strict && size !== payloadLength) {
      throw new Error(`symlink SIZE ${size} is not the length of its target (${payloadLength})`);
    }
    if (strict && contentLength > 0) throw new Error('a symlink cannot have CONTENT');
  } else if (contentLength > COMPOSEFS_INLINE_MAX) {
    throw new Error(`inline content of ${contentLength} bytes exceeds the maximum ${COMPOSEFS_INLINE_MAX}`);
  }
  if (strict && rdev !== 0 && type !== S_IFCHR && type !== S_IFBLK) {
    throw new Error(`RDEV ${rdev} on something that is not a device`);
  }
  if (!isDashAt(data, 10)) {
    // Read in place unless escaped (a digest seldom is).
    const escaped = hasEscapeAt(data, 10);
    const digits = escaped ? unescapeField(fieldView(data, 10)) : data;
    const from = escaped ? 0 : bounds[20]!;
    const to = escaped ? digits.length : bounds[21]!;
    const hex = hex64Class(digits, from, to);
    // mkcomposefs ignores a digest it cannot decode on anything but a regular file.
    if (hex !== 0 || strict || type === S_IFREG) {
      if (hex === 0) throw new Error(`digest "${digits.toString('latin1', from, to).slice(0, 80)}" is not 64 hex characters`);
      if (strict && (hex & HEX_UPPER) !== 0) throw new Error(`digest "${digits.toString('latin1', from, to)}" must be lowercase hex`);
      table.setRange(row, DIGEST, bounds[20]!, bounds[21]!);
    }
  }
  if (rest < end) {
    parseXattrs(data.subarray(rest, end), strict); // checked now, read again when asked for
    table.setRange(row, XATTRS, rest, end);
  }
  if (payloadLength >= 0) table.setRange(row, PAYLOAD, bounds[16]!, bounds[17]!);
  if (contentLength >= 0) table.setRange(row, CONTENT, bounds[18]!, bounds[19]!);
  table.setNumbers(row, size, mtimeSec);
  table.nlink[row] = nlink;
  table.uid[row] = uid;
  table.gid[row] = gid;
  table.rdev[row] = rdev;
  table.mtimeNsec[row] = mtimeNsec;
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

/** How many lines the text has: one per newline, and a last one without. */
function lineCount(data: Buffer): number {
  let n = 0;
  for (let i = data.indexOf(NEWLINE); i >= 0; i = data.indexOf(NEWLINE, i + 1)) n++;
  return endsWithNewline(data) ? n : n + 1;
}

/** Parses a whole dump into a table. Errors are InvalidManifestError with pointer "line N". */
export function parseDumpTable(text: Buffer | string, options: DumpParseOptions = {}): DumpTable {
  const strict = options.strict ?? true;
  const data = dumpBytes(text);
  const table = new DumpTable(data, lineCount(data), strict);
  const nul = data.indexOf(0);
  let start = 0;
  let row = 0;
  while (start < data.length) {
    let end = data.indexOf(NEWLINE, start);
    const terminated = end >= 0;
    if (!terminated) end = data.length;
    try {
      parseLine(data, start, end, nul, table, row);
    } catch (err) {
      throw new InvalidManifestError((err as Error).message, `line ${row + 1}`);
    }
    row++;
    // Checked after the line itself, so a broken last line reports its real problem.
    if (!terminated && strict && !options.allowMissingFinalNewline) throw new InvalidManifestError('the last line has no newline (lenient parsing accepts that)', `line ${row}`);
    start = end + 1;
  }
  if (table.count === 0) throw new InvalidManifestError('the dump has no entries', 'line 1');
  return table;
}

/** Parses a whole dump. Errors are InvalidManifestError with pointer "line N". */
export function parseDump(text: Buffer | string, options: DumpParseOptions = {}): DumpEntry[] {
  return parseDumpTable(text, options).entries();
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
