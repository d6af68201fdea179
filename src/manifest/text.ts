// The strings of a manifest as the bytes they become in the image. A JSON
// string stands for its UTF-8 bytes (one holding a lone UTF-16 surrogate has
// none, and is refused); {"base64": ...} spells any byte string. Everything
// that measures, orders, compares or writes these values does it through a
// TextCodec, so it works on the bytes and never on UTF-16 code units:
// UTF8_TEXT keeps the manifest's own strings (the common case: no copies),
// BINARY_TEXT, chosen as soon as one value of a manifest is given as bytes,
// turns every value into a binary string (one char per byte, as latin1), on
// which the same string code compares, slices and measures bytes.
import type { Bytes, Entry } from '../schema/types.generated.js';

/** A value that becomes bytes in the image, as the manifest spells it. */
export type ByteText = string | Bytes;

/** String.prototype.isWellFormed (ES2024, in Node 20; the ES2022 lib does not declare it). */
type WellFormed = { isWellFormed(): boolean };

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Whether a string has UTF-8 bytes: it holds no lone surrogate. */
export function isEncodable(s: string): boolean {
  return (s as unknown as WellFormed).isWellFormed();
}

/** Index of the first lone surrogate (a UTF-16 unit no UTF-8 encodes), or -1. */
export function loneSurrogateIndex(s: string): number {
  if (isEncodable(s)) return -1;
  return LONE_SURROGATE.exec(s)!.index;
}

/** Why a string has no UTF-8 bytes, or undefined when it has. */
export function loneSurrogateProblem(s: string, what: string): string | undefined {
  const i = loneSurrogateIndex(s);
  if (i < 0) return undefined;
  const unit = s.charCodeAt(i).toString(16).toUpperCase();
  return `${what} holds a lone UTF-16 surrogate (\\u${unit} at index ${i}), which no UTF-8 byte string encodes: give the bytes as {"base64": "..."}`;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** The bytes a value stands for. */
export function bytesOf(v: ByteText): Buffer {
  return typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.from(v.base64, 'base64');
}

/** The text of bytes that are UTF-8, or undefined. */
export function utf8Text(bytes: Uint8Array): string | undefined {
  // ASCII, the common case, is its own UTF-8: latin1 decodes it without the validating decoder.
  let ascii = true;
  for (let i = 0; i < bytes.length && ascii; i++) ascii = bytes[i]! < 0x80;
  if (ascii) return Buffer.isBuffer(bytes) ? bytes.toString('latin1') : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('latin1');
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return undefined;
  }
}

/** How the manifest spells bytes: a plain string when they are UTF-8, {"base64"} otherwise. */
export function byteText(bytes: Uint8Array): ByteText {
  const text = utf8Text(bytes);
  return text ?? { base64: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('base64') };
}

/** One JS string per byte string, whatever the spelling: for Map keys and equality. */
export function byteKey(v: ByteText): string {
  if (typeof v === 'string') return v;
  const bytes = Buffer.from(v.base64, 'base64');
  return utf8Text(bytes) ?? '\0' + bytes.toString('latin1'); // NUL: never the start of a valid value
}

/** Bytes as a message shows them: printable ASCII as is, the rest as \xNN (the dump's escapes). */
export function escapeBytes(bytes: Uint8Array): string {
  let out = '';
  for (const c of bytes) out += c >= 0x20 && c < 0x7f && c !== 0x5c ? String.fromCharCode(c) : c === 0x5c ? '\\\\' : `\\x${c.toString(16).padStart(2, '0')}`;
  return out;
}

/** A value for a message: the text itself, or its bytes escaped when they are not UTF-8. */
export function showText(v: ByteText | Uint8Array): string {
  if (typeof v === 'string') return v;
  const bytes = v instanceof Uint8Array ? v : Buffer.from(v.base64, 'base64');
  return utf8Text(bytes) ?? escapeBytes(bytes);
}

/** UTF-8 byte length without leaving JS (short ASCII strings are the common case). */
export function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 2; // a pair: 2 units, 4 bytes
      i++;
    } else n += 2;
  }
  return n;
}

/** How one image's values are held as strings, measured and written. */
export interface TextCodec {
  readonly binary: boolean;
  /** The value as a string of this codec (a value with lone surrogates must have been refused). */
  text(v: ByteText): string;
  /** Byte length of a string of this codec. */
  length(s: string): number;
  /** Writes `s`, of `bytes` bytes, at `at`. */
  write(buf: Buffer, at: number, s: string, bytes: number): void;
  bytes(s: string): Buffer;
  /** A string of this codec, for a message. */
  show(s: string): string;
}

export const UTF8_TEXT: TextCodec = {
  binary: false,
  text(v) {
    if (typeof v !== 'string') throw new Error('mountgate: a byte value reached the UTF-8 codec (use codecFor)');
    return v;
  },
  length: utf8Length,
  write(buf, at, s, bytes) {
    if (bytes !== s.length) {
      buf.write(s, at, bytes, 'utf8');
      return;
    }
    for (let i = 0; i < bytes; i++) buf[at + i] = s.charCodeAt(i);
  },
  bytes: (s) => Buffer.from(s, 'utf8'),
  show: (s) => s,
};

export const BINARY_TEXT: TextCodec = {
  binary: true,
  text: (v) => bytesOf(v).toString('latin1'),
  length: (s) => s.length,
  write(buf, at, s, bytes) {
    for (let i = 0; i < bytes; i++) buf[at + i] = s.charCodeAt(i);
  },
  bytes: (s) => Buffer.from(s, 'latin1'),
  show: (s) => showText(Buffer.from(s, 'latin1')),
};

/** Whether any value of the entry that becomes bytes is given as bytes. */
function hasBytesValue(e: Entry): boolean {
  if (typeof e.path !== 'string') return true;
  if (e.type === 'hardlink') return typeof e.target !== 'string';
  if (e.type === 'symlink' && typeof e.target !== 'string') return true;
  if (e.type === 'file' && e.backing !== undefined && typeof e.backing !== 'string') return true;
  if (e.xattrs) for (const x of e.xattrs) if (typeof x.key !== 'string') return true;
  return false;
}

/** UTF8_TEXT when every value is a plain string, else BINARY_TEXT. */
export function codecFor(entries: readonly Entry[]): TextCodec {
  for (const e of entries) if (hasBytesValue(e)) return BINARY_TEXT;
  return UTF8_TEXT;
}
