// A streaming tar reader: ustar, GNU (long names and links 'L'/'K', old
// sparse 'S', base-256 numbers) and PAX (per-entry and global headers; path,
// linkpath, size, uid, gid, mtime; xattrs as SCHILY.xattr.* and
// LIBARCHIVE.xattr.*; POSIX ACLs as SCHILY.acl.access and SCHILY.acl.default,
// kept as the xattrs the kernel holds them in (acl.ts); GNU sparse formats
// 0.0, 0.1 and 1.0). Nothing is
// written anywhere: each entry's contents stream through `data()` as the
// logical file (a sparse file's holes as zeros). Every byte that is not file
// content (headers, extension data, padding, the end of the archive) can be
// handed to a `SplitSink` as it is read, which, with the contents by digest,
// is what rebuilds the archive byte for byte (as tar-split does).
import { InvalidRequestError } from '../errors.js';
import { escapeBytes } from '../manifest/text.js';
import { ACL_ACCESS_XATTR, ACL_DEFAULT_XATTR, aclXattr, type AclNames } from './acl.js';
import { ByteSource } from './bytes.js';

export const BLOCK = 512;

export type TarEntryType = 'file' | 'hardlink' | 'symlink' | 'chardev' | 'blockdev' | 'dir' | 'fifo';

export interface SparseSegment {
  offset: number;
  length: number;
}

export interface TarEntry {
  type: TarEntryType;
  /** The name as the archive gives it (bytes), before any normalization. */
  name: Buffer;
  /** Hardlink or symlink target, as given. */
  linkName?: Buffer;
  mode: number;
  uid: number;
  gid: number;
  /** The logical size of a regular file (a sparse file's real size); 0 otherwise. */
  size: number;
  mtime: { sec: number; nsec: number };
  devMajor: number;
  devMinor: number;
  /** Extended attributes in the order the archive gives them (key bytes, value bytes), later duplicates dropped. */
  xattrs: [Buffer, Buffer][];
  /** For a sparse file: where its data lies (everything else reads as zeros). */
  sparse?: SparseSegment[];
  /** Whether the archive said anything this reader does not keep (NFSv4 ACLs, file flags), by PAX key. */
  ignored: string[];
}

/** Where the bytes of an archive go that are not file contents (see tarsplit.ts). */
export interface SplitSink {
  raw(bytes: Buffer): void;
  /** The data area of a regular file follows: its stored bytes (for a sparse file, only its segments). */
  content(entry: TarEntry, storedBytes: number): void;
}

const ZERO_BLOCK = Buffer.alloc(BLOCK);
const ZEROS = Buffer.alloc(1 << 20);

function describe(name: Buffer | undefined): string {
  return name ? `"${escapeBytes(name)}"` : 'an entry';
}

/** A NUL-terminated field's bytes. */
function cString(field: Buffer): Buffer {
  const end = field.indexOf(0);
  return end < 0 ? field : field.subarray(0, end);
}

/** A numeric header field: octal digits (space or NUL padded), or base-256 when its first byte has the top bit. */
export function parseNumber(field: Buffer, what: string): number {
  if (field[0]! & 0x80) {
    const negative = field[0] === 0xff;
    let v = BigInt(field[0]! & 0x7f);
    for (let i = 1; i < field.length; i++) v = (v << 8n) | BigInt(field[i]!);
    if (negative) v -= 1n << BigInt(field.length * 8 - 1);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) throw new InvalidRequestError(`the ${what} field holds a number too large for this reader`);
    return Number(v);
  }
  let i = 0;
  while (i < field.length && field[i] === 0x20) i++;
  let v = 0;
  let digits = 0;
  for (; i < field.length; i++) {
    const c = field[i]!;
    if (c === 0 || c === 0x20) break;
    if (c < 0x30 || c > 0x37) throw new InvalidRequestError(`the ${what} field is not an octal number (${JSON.stringify(field.toString('latin1'))})`);
    v = v * 8 + (c - 0x30);
    digits++;
  }
  if (digits === 0) return 0;
  return v;
}

function checksumOk(block: Buffer): boolean {
  let stored: number;
  try {
    stored = parseNumber(block.subarray(148, 156), 'checksum');
  } catch {
    return false;
  }
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : block[i]!;
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  return stored === unsigned || stored === signed;
}

/** PAX records in order ("LEN KEY=VALUE\n"); values are bytes. */
export function parsePax(data: Buffer): [string, Buffer, Buffer][] {
  const out: [string, Buffer, Buffer][] = [];
  let at = 0;
  while (at < data.length) {
    if (data[at] === 0) break; // padding some writers leave
    const space = data.indexOf(0x20, at);
    const len = space < 0 ? NaN : Number(data.toString('latin1', at, space));
    if (!Number.isInteger(len) || len <= 0 || at + len > data.length || data[at + len - 1] !== 0x0a) throw new InvalidRequestError(`a PAX extended header has a malformed record at byte ${at}`);
    const record = data.subarray(space + 1, at + len - 1);
    const eq = record.indexOf(0x3d);
    if (eq < 0) throw new InvalidRequestError(`a PAX extended header has a record without "=" at byte ${at}`);
    const keyBytes = record.subarray(0, eq);
    out.push([keyBytes.toString('latin1'), keyBytes, record.subarray(eq + 1)]);
    at += len;
  }
  return out;
}

function paxNumber(v: Buffer, key: string): number {
  const s = v.toString('latin1');
  if (!/^\d+$/.test(s) || !Number.isSafeInteger(Number(s))) throw new InvalidRequestError(`PAX ${key}=${JSON.stringify(s)} is not a number this reader accepts`);
  return Number(s);
}

/** PAX time "SEC[.FRACTION]" (may be negative). */
function paxTime(v: Buffer, key: string): { sec: number; nsec: number } {
  const s = v.toString('latin1');
  const m = /^(-?)(\d+)(?:\.(\d*))?$/.exec(s);
  if (!m) throw new InvalidRequestError(`PAX ${key}=${JSON.stringify(s)} is not a time`);
  let sec = Number(m[2]);
  let nsec = Number(((m[3] ?? '') + '000000000').slice(0, 9));
  if (m[1] === '-') {
    if (nsec > 0) {
      sec += 1;
      nsec = 1_000_000_000 - nsec;
    }
    sec = -sec;
  }
  return { sec, nsec };
}

/** %XX escapes of a LIBARCHIVE.xattr name. */
function urlDecode(b: Buffer): Buffer {
  const s = b.toString('latin1');
  return Buffer.from(s.replace(/%([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1');
}

function sparseFromList(numbers: number[], what: string): SparseSegment[] {
  if (numbers.length % 2 !== 0) throw new InvalidRequestError(`${what}: its sparse map has an odd number of values`);
  const out: SparseSegment[] = [];
  for (let i = 0; i < numbers.length; i += 2) out.push({ offset: numbers[i]!, length: numbers[i + 1]! });
  return out;
}

function checkSparse(map: SparseSegment[], realSize: number, stored: number, what: string): void {
  let end = 0;
  let sum = 0;
  for (const s of map) {
    if (s.offset < end || s.offset + s.length > realSize) throw new InvalidRequestError(`${what}: its sparse map has a segment out of order or past the file's end`);
    end = s.offset + s.length;
    sum += s.length;
  }
  if (sum !== stored) throw new InvalidRequestError(`${what}: its sparse map covers ${sum} bytes, but the archive stores ${stored}`);
}

/** What PAX records (global, then the entry's own) say about the next entry. */
interface Extended {
  path?: Buffer;
  linkpath?: Buffer;
  size?: number;
  uid?: number;
  gid?: number;
  mtime?: { sec: number; nsec: number };
  xattrs: Map<string, [Buffer, Buffer]>;
  sparseMajor?: number;
  sparseMinor?: number;
  sparseName?: Buffer;
  sparseRealSize?: number;
  sparseList: number[];
  sparseMap?: number[];
  /** SCHILY.acl.access and SCHILY.acl.default, as text. */
  acl: { access?: Buffer; default?: Buffer };
  ignored: string[];
}

function emptyExtended(): Extended {
  return { xattrs: new Map(), sparseList: [], acl: {}, ignored: [] };
}

function applyPax(ext: Extended, records: [string, Buffer, Buffer][]): void {
  for (const [key, keyBytes, value] of records) {
    if (key === 'path') ext.path = value;
    else if (key === 'linkpath') ext.linkpath = value;
    else if (key === 'size') ext.size = paxNumber(value, key);
    else if (key === 'uid') ext.uid = paxNumber(value, key);
    else if (key === 'gid') ext.gid = paxNumber(value, key);
    else if (key === 'mtime') ext.mtime = paxTime(value, key);
    else if (key.startsWith('SCHILY.xattr.')) {
      const name = keyBytes.subarray('SCHILY.xattr.'.length);
      ext.xattrs.set(name.toString('latin1'), [name, value]);
    } else if (key.startsWith('LIBARCHIVE.xattr.')) {
      const name = urlDecode(keyBytes.subarray('LIBARCHIVE.xattr.'.length));
      ext.xattrs.set(name.toString('latin1'), [name, Buffer.from(value.toString('latin1'), 'base64')]);
    } else if (key === 'SCHILY.acl.access') ext.acl.access = value;
    else if (key === 'SCHILY.acl.default') ext.acl.default = value;
    else if (key === 'GNU.sparse.major') ext.sparseMajor = paxNumber(value, key);
    else if (key === 'GNU.sparse.minor') ext.sparseMinor = paxNumber(value, key);
    else if (key === 'GNU.sparse.name') ext.sparseName = value;
    else if (key === 'GNU.sparse.realsize' || key === 'GNU.sparse.size') ext.sparseRealSize = paxNumber(value, key);
    else if (key === 'GNU.sparse.offset' || key === 'GNU.sparse.numbytes') ext.sparseList.push(paxNumber(value, key));
    else if (key === 'GNU.sparse.map') ext.sparseMap = value.length === 0 ? [] : value.toString('latin1').split(',').map((n) => paxNumber(Buffer.from(n), key));
    else if (key === 'GNU.sparse.numblocks') {
      // the count of the pairs that follow (0.0) or of the map (0.1): implied by them
    } else if (key === 'atime' || key === 'ctime' || key === 'uname' || key === 'gname' || key === 'charset' || key === 'hdrcharset' || key === 'comment' || key === 'SCHILY.dev' || key === 'SCHILY.ino' || key === 'SCHILY.nlink' || key === 'SCHILY.filetype') {
      // not part of what an image keeps
    } else ext.ignored.push(key);
  }
}

/** The xattrs of an entry: the global records', then its own, then its ACLs as the kernel keeps them. */
function entryXattrs(global: Extended, ext: Extended, what: string, names: AclNames | undefined): [Buffer, Buffer][] {
  const all = new Map([...global.xattrs, ...ext.xattrs]);
  for (const [kind, key] of [['access', ACL_ACCESS_XATTR], ['default', ACL_DEFAULT_XATTR]] as const) {
    const text = ext.acl[kind] ?? global.acl[kind];
    if (text === undefined) continue;
    const value = aclXattr(text.toString('utf8'), kind, what, names);
    if (value) all.set(key, [Buffer.from(key), value]);
    else all.delete(key);
  }
  return [...all.values()];
}

export interface ReadTarOptions {
  /** What the archive is called in messages. */
  what?: string;
  split?: SplitSink;
  /** Every byte of the (uncompressed) archive, in order: for its diff ID. */
  tap?: (bytes: Buffer) => void;
  /** Resolves names in ACL entries that carry no id (default: the host's, as tar -x would). */
  aclNames?: AclNames;
}

export interface TarReader {
  /** The next entry, or undefined at the end of the archive. Unread data of the previous entry is skipped. */
  next(): Promise<TarEntry | undefined>;
  /** The current regular file's logical contents (once, before the next call to next()). */
  data(): AsyncIterable<Buffer>;
  /** Bytes of the archive read so far. */
  readonly position: number;
}

/** Reads a tar archive from `chunks` (uncompressed). */
export function readTar(chunks: AsyncIterable<Uint8Array>, opts: ReadTarOptions = {}): TarReader {
  const what = opts.what ?? 'the archive';
  const split = opts.split;
  const src = new ByteSource(chunks, what, opts.tap);
  let global = emptyExtended();
  /** The data area of the current entry not read yet: stored bytes, then padding. */
  let pendingData = 0;
  let pendingPad = 0;
  let current: TarEntry | undefined;
  let dataTaken = true;
  let finished = false;

  async function rawRead(n: number): Promise<Buffer | undefined> {
    const b = await src.read(n);
    if (b && split) split.raw(b);
    return b;
  }

  async function skipRemaining(): Promise<void> {
    if (pendingData > 0) {
      if (split) throw new Error('tar reader: the data of a file was not read while the archive is being split');
      await src.skip(pendingData);
      pendingData = 0;
    }
    if (pendingPad > 0) {
      await rawRead(pendingPad);
      pendingPad = 0;
    }
  }

  async function extensionData(size: number, kind: string): Promise<Buffer> {
    if (size > 16 << 20) throw new InvalidRequestError(`${what} has a ${kind} of ${size} bytes; at most 16 MiB is accepted`);
    const padded = Math.ceil(size / BLOCK) * BLOCK;
    const b = await rawRead(padded);
    if (!b) throw new InvalidRequestError(`${what} is truncated inside a ${kind}`);
    return b.subarray(0, size);
  }

  async function next(): Promise<TarEntry | undefined> {
    if (finished) return undefined;
    if (current && current.type === 'file' && !dataTaken && split) {
      // Contents must pass through the split sink in order: read and drop them.
      for await (const _ of data());
    }
    await skipRemaining();
    current = undefined;
    const ext = emptyExtended();
    let longName: Buffer | undefined;
    let longLink: Buffer | undefined;
    let sawExtension = false;
    for (;;) {
      const block = await rawRead(BLOCK);
      if (!block) {
        if (sawExtension) throw new InvalidRequestError(`${what} ends right after an extended header`);
        // No end-of-archive blocks: GNU tar accepts that, and so do we.
        finished = true;
        return undefined;
      }
      if (block.equals(ZERO_BLOCK)) {
        if (sawExtension) throw new InvalidRequestError(`${what} has an extended header followed by the end of the archive`);
        // The end of the archive: everything after it (the second zero block, the record padding) is kept as it is.
        await src.drain(split ? (b) => split.raw(b) : undefined);
        finished = true;
        return undefined;
      }
      if (!checksumOk(block)) throw new InvalidRequestError(`${what} is not a tar archive or is corrupt: bad header checksum at offset ${src.position - BLOCK}`);
      const flag = String.fromCharCode(block[156]!);
      const size = parseNumber(block.subarray(124, 136), 'size');
      if (size < 0) throw new InvalidRequestError(`${what} has a header with a negative size at offset ${src.position - BLOCK}`);
      if (flag === 'x' || flag === 'g') {
        const records = parsePax(await extensionData(size, 'PAX header'));
        if (flag === 'g') applyPax(global, records);
        else applyPax(ext, records);
        sawExtension = true;
        continue;
      }
      if (flag === 'L' || flag === 'K') {
        const v = cString(await extensionData(size, flag === 'L' ? 'GNU long name' : 'GNU long link name'));
        if (flag === 'L') longName = v;
        else longLink = v;
        sawExtension = true;
        continue;
      }
      if (flag === 'V') {
        // A volume label: not a file.
        await extensionData(size, 'volume label');
        continue;
      }
      if (flag === 'M' || flag === 'N') throw new InvalidRequestError(`${what} uses a multi-volume or old GNU long-name header (type ${flag}), which this reader does not handle`);
      return entryFrom(block, flag, size, ext, longName, longLink);
    }
  }

  async function entryFrom(block: Buffer, flag: string, headerSize: number, ext: Extended, longName: Buffer | undefined, longLink: Buffer | undefined): Promise<TarEntry> {
    const magic = block.toString('latin1', 257, 263);
    const gnu = magic === 'ustar ';
    const ustar = magic === 'ustar\0';
    let name = cString(block.subarray(0, 100));
    if (ustar) {
      const prefix = cString(block.subarray(345, 500));
      if (prefix.length > 0) name = Buffer.concat([prefix, Buffer.from('/'), name]);
    }
    name = ext.path ?? global.path ?? longName ?? name;
    const linkName = ext.linkpath ?? global.linkpath ?? longLink ?? cString(block.subarray(157, 257));
    const at = `${describe(name)} in ${what}`;
    const num = (from: number, to: number, field: string) => parseNumber(block.subarray(from, to), `${field} field of ${at}`);
    let mtime = ext.mtime ?? global.mtime ?? { sec: num(136, 148, 'mtime'), nsec: 0 };
    const stored = ext.size ?? global.size ?? headerSize;
    const types: Record<string, TarEntryType> = { '0': 'file', '\0': 'file', '7': 'file', S: 'file', '1': 'hardlink', '2': 'symlink', '3': 'chardev', '4': 'blockdev', '5': 'dir', D: 'dir', '6': 'fifo' };
    let type = types[flag];
    if (!type) throw new InvalidRequestError(`${at} has an entry type this reader does not know (${JSON.stringify(flag)})`);
    // Old archives mark directories only by a trailing slash.
    if (type === 'file' && flag === '\0' && name.length > 0 && name[name.length - 1] === 0x2f) type = 'dir';
    const entry: TarEntry = {
      type,
      name,
      mode: num(100, 108, 'mode') & 0o7777,
      uid: ext.uid ?? global.uid ?? num(108, 116, 'uid'),
      gid: ext.gid ?? global.gid ?? num(116, 124, 'gid'),
      size: 0,
      mtime,
      devMajor: ustar || gnu ? num(329, 337, 'devmajor') : 0,
      devMinor: ustar || gnu ? num(337, 345, 'devminor') : 0,
      // The entry's own records win over the global ones.
      xattrs: entryXattrs(global, ext, at, opts.aclNames),
      ignored: [...global.ignored, ...ext.ignored],
    };
    if (type === 'hardlink' || type === 'symlink') entry.linkName = linkName;
    if (entry.uid < 0 || entry.gid < 0) throw new InvalidRequestError(`${at} has a negative owner`);
    if (mtime.sec < 0) throw new InvalidRequestError(`${at} has a modification time before 1970, which a manifest cannot hold`);
    mtime = entry.mtime;

    let storedData = type === 'file' ? stored : type === 'dir' && flag === 'D' ? stored : 0;
    if (type !== 'file' && flag !== 'D' && stored > 0 && type !== 'hardlink') {
      // Only regular files carry data; a writer that sets a size on others still stores it.
      storedData = stored;
    }
    let dataOffset = 0;
    if (type === 'file') {
      let realSize = stored;
      if (flag === 'S') {
        const numbers: number[] = [];
        const readPairs = (b: Buffer, from: number, count: number) => {
          for (let i = 0; i < count; i++) {
            const o = from + i * 24;
            if (b[o] === 0) return;
            numbers.push(parseNumber(b.subarray(o, o + 12), `sparse offset of ${at}`), parseNumber(b.subarray(o + 12, o + 24), `sparse size of ${at}`));
          }
        };
        readPairs(block, 386, 4);
        let extended = block[482] !== 0;
        while (extended) {
          const more = await rawRead(BLOCK);
          if (!more) throw new InvalidRequestError(`${what} is truncated inside the sparse map of ${describe(name)}`);
          readPairs(more, 0, 21);
          extended = more[504] !== 0;
        }
        realSize = parseNumber(block.subarray(483, 495), `realsize field of ${at}`);
        entry.sparse = sparseFromList(numbers, at);
      } else if (ext.sparseMajor === 1 && ext.sparseMinor === 0) {
        // 1.0: the map is at the start of the data area, in decimal lines, padded to a block.
        const lines: number[] = [];
        let text = '';
        let blocks = 0;
        let wanted = -1;
        while (wanted < 0 || lines.length < 1 + wanted * 2) {
          const b = await rawRead(BLOCK);
          if (!b) throw new InvalidRequestError(`${what} is truncated inside the sparse map of ${describe(name)}`);
          blocks++;
          text += b.toString('latin1');
          const parts = text.split('\n');
          text = parts.pop()!;
          for (const p of parts) {
            if (wanted >= 0 && lines.length >= 1 + wanted * 2) break;
            if (!/^\d+$/.test(p)) throw new InvalidRequestError(`${at} has a malformed sparse map`);
            lines.push(Number(p));
            if (lines.length === 1) wanted = lines[0]!;
          }
          if (blocks * BLOCK > 16 << 20) throw new InvalidRequestError(`${at} has a sparse map larger than 16 MiB`);
        }
        dataOffset = blocks * BLOCK;
        entry.sparse = sparseFromList(lines.slice(1), at);
        realSize = ext.sparseRealSize ?? NaN;
        if (ext.sparseName) entry.name = ext.sparseName;
      } else if (ext.sparseMap !== undefined || ext.sparseList.length > 0) {
        // 0.1 (a map) or 0.0 (offset/numbytes records, in order).
        entry.sparse = sparseFromList(ext.sparseMap ?? ext.sparseList, at);
        realSize = ext.sparseRealSize ?? NaN;
        if (ext.sparseName) entry.name = ext.sparseName;
      }
      if (entry.sparse) {
        if (!Number.isSafeInteger(realSize)) throw new InvalidRequestError(`${at} is a sparse file without a real size`);
        // GNU tar ends some maps with an empty segment at the real size.
        entry.sparse = entry.sparse.filter((s, i, all) => s.length > 0 || i < all.length - 1);
        if (entry.sparse.length > 0 && entry.sparse.at(-1)!.length === 0) entry.sparse.pop();
        checkSparse(entry.sparse, realSize, storedData - dataOffset, at);
      }
      entry.size = realSize;
    }
    pendingData = storedData - dataOffset;
    pendingPad = (BLOCK - (storedData % BLOCK)) % BLOCK;
    current = entry;
    dataTaken = false;
    if (type !== 'file' && pendingData > 0) {
      // Not file contents (a dumpdir's listing, a size on a link): raw bytes.
      for await (const piece of src.take(pendingData)) split?.raw(piece);
      pendingData = 0;
    } else if (type === 'file' && split) split.content(entry, pendingData);
    return entry;
  }

  async function* data(): AsyncGenerator<Buffer> {
    const entry = current;
    if (!entry || entry.type !== 'file' || dataTaken) throw new Error('tar reader: data() of an entry that is not the current regular file');
    dataTaken = true;
    const storedBytes = pendingData;
    pendingData = 0;
    if (!entry.sparse) {
      yield* src.take(storedBytes);
    } else {
      let at = 0;
      const zeros = function* (n: number) {
        while (n > 0) {
          const k = Math.min(n, ZEROS.length);
          yield ZEROS.subarray(0, k);
          n -= k;
        }
      };
      for (const seg of entry.sparse) {
        yield* zeros(seg.offset - at);
        yield* src.take(seg.length);
        at = seg.offset + seg.length;
      }
      yield* zeros(entry.size - at);
    }
    if (pendingPad > 0) {
      await rawRead(pendingPad);
      pendingPad = 0;
    }
  }

  return {
    next,
    data,
    get position() {
      return src.position;
    },
  };
}
