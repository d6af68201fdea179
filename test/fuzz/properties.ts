// Property-based fuzzing of the manifest validation, the dump parser, the
// writer and the reader (issue 7, tests): the generators and the properties,
// shared by test/fuzz/fuzz.test.ts (fixed seed, few runs, in every suite run)
// and bench/fuzz.ts (long runs with any seed). No tap here, so the bench can
// import it.
//
// - validation never throws on any JSON value, only refuses with
//   InvalidManifestError; what it accepts, the writer builds;
// - generated trees (byte names, names whose UTF-8 and UTF-16 orders differ,
//   every kind of entry, xattrs with byte keys): valid, written
//   deterministically, the same image for either spelling of a name, and the
//   reader gives the tree back; a subset passes fsck.erofs;
// - dump parse -> serialize -> parse is the identity on generated dumps with
//   arbitrary byte strings; manifest -> dump -> manifest is the identity;
// - random byte mutations of a valid dump, and of a valid image, never crash
//   the parser, the converter or the reader: they give a value or an
//   InvalidManifestError.
import fc from 'fast-check';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { manifestFromDumpText, manifestToDump } from '../../src/composefs/convert.js';
import { parseDump, serializeDump, type DumpEntry } from '../../src/composefs/dump.js';
import { imageToDumpEntries, imageToManifest } from '../../src/composefs/reader.js';
import { writeImage } from '../../src/composefs/writer.js';
import { InvalidManifestError } from '../../src/manifest/errors.js';
import { validateManifest } from '../../src/manifest/load.js';
import { byteText, bytesOf, type ByteText } from '../../src/manifest/text.js';
import type { Entry, Manifest } from '../../src/schema/types.generated.js';

// ---- names and values as bytes ---------------------------------------------------------

const utf8 = (s: string) => Buffer.from(s, 'utf8');
/** Names whose order is easy to get wrong: UTF-8 order differs from UTF-16 order between U+E000..U+FFFF and astral characters. */
const trickyNames = ['a', 'b', 'dir', 'x y', '-dash', '.hidden', '..x', 'é', '日本', '00', 'ff', '7e', '\ue000', '\uffee', '\uff5e', '\u{1f600}', '\u{10000}', 'a\u{1f600}', 'a\ue000', 'z'.repeat(255)];
const isName = (b: Buffer) => b.length >= 1 && b.length <= 255 && !b.includes(0) && !b.includes(0x2f) && !(b.length <= 2 && b.every((c) => c === 0x2e));

export const nameBytes: fc.Arbitrary<Buffer> = fc.oneof(
  fc.constantFrom(...trickyNames).map(utf8),
  fc.stringMatching(/^[a-zA-Z0-9_.-]{1,16}$/).map(utf8),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 8 }).map(utf8),
  // Not UTF-8 at all: any bytes but NUL and "/".
  fc.uint8Array({ minLength: 1, maxLength: 12 }).map((a) => Buffer.from(a.map((c) => (c === 0 || c === 0x2f ? 0xff : c)))),
).filter(isName);

/** Text or bytes, as a symlink target or backing path may be: 1..max bytes, no NUL. */
const payloadBytes = (max: number): fc.Arbitrary<Buffer> =>
  fc.oneof(
    fc.constantFrom('usr/bin', '../x', '/abs/path', 'é/日本', '.', '\u{1f600}\ue000').map(utf8),
    fc.string({ unit: 'binary', minLength: 1, maxLength: 60 }).map(utf8),
    fc.uint8Array({ minLength: 1, maxLength: 80 }).map((a) => Buffer.from(a.map((c) => (c === 0 ? 0xfe : c)))),
  ).filter((b) => b.length >= 1 && b.length <= max && !b.includes(0));

const xattrKeyBytes: fc.Arbitrary<Buffer> = fc.oneof(
  fc.constantFrom('user.a', 'user.b', 'user.overlay.x', 'trusted.x', 'trusted.overlay.custom', 'trusted.overlay.redirect', 'security.selinux', 'system.posix_acl_access', 'user.é', 'user.\u{1f600}', 'user.\ue000').map(utf8),
  fc.uint8Array({ minLength: 1, maxLength: 10 }).map((a) => Buffer.concat([utf8('user.'), Buffer.from(a.map((c) => (c === 0 ? 0x80 : c)))])),
);
const xattrValue = fc.oneof(
  fc.constantFrom('', 'x', 'shared value', 'y'.repeat(100)).map(utf8),
  fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
);
const xattrList = fc.uniqueArray(fc.record({ key: xattrKeyBytes, value: xattrValue }), { selector: (x) => x.key.toString('hex'), maxLength: 4 });

// ---- trees -------------------------------------------------------------------------

const t0 = { sec: 1700000000, nsec: 0 };
const id = fc.oneof(fc.constantFrom(0, 1, 1000, 65535, 65536, 4294967295), fc.integer({ min: 0, max: 4294967295 }));
const mtime = fc.oneof(fc.constant(t0), fc.record({ sec: fc.integer({ min: 0, max: 2 ** 40 }), nsec: fc.integer({ min: 0, max: 999999999 }) }));
const attrs = fc.record({ mode: fc.integer({ min: 0, max: 0o7777 }), uid: id, gid: id, mtime, xattrs: xattrList });
const infoSize = fc.option(fc.integer({ min: 1, max: 2 ** 40 }), { nil: undefined, freq: 4 });
const digest = fc.integer({ min: 0, max: 7 }).map((n) => createHash('sha256').update(`object ${n}`).digest('hex'));

type Attrs = { mode: number; uid: number; gid: number; mtime: { sec: number; nsec: number }; xattrs: Array<{ key: Buffer; value: Buffer }> };
type Leaf =
  | { kind: 'file'; attrs: Attrs; size: number; inline: Buffer | null; digest: string | null; backing: Buffer | null }
  | { kind: 'symlink'; attrs: Attrs; target: Buffer }
  | { kind: 'fifo' | 'socket' | 'whiteout'; attrs: Attrs; size: number | undefined }
  | { kind: 'chardev' | 'blockdev'; attrs: Attrs; rdev: number; size: number | undefined };
type Tree = { kind: 'dir'; attrs: Attrs; children: Array<[Buffer, Tree]> } | Leaf;

const leaf: fc.Arbitrary<Leaf> = fc.oneof(
  fc.record({ kind: fc.constant('file' as const), attrs, size: fc.constant(0), inline: fc.constant(null), digest: fc.constant(null), backing: fc.constant(null) }),
  fc.tuple(attrs, fc.uint8Array({ minLength: 1, maxLength: 5000 }), fc.option(digest, { nil: null })).map(([a, c, d]) => ({ kind: 'file' as const, attrs: a, size: c.length, inline: Buffer.from(c), digest: d, backing: null })),
  fc.record({
    kind: fc.constant('file' as const), attrs, size: fc.oneof(fc.integer({ min: 1, max: 70000 }), fc.constantFrom(4096, 2 ** 43, 2 ** 53)),
    inline: fc.constant(null), digest: fc.option(digest, { nil: null }), backing: fc.option(payloadBytes(4095), { nil: null }),
  }),
  fc.record({ kind: fc.constant('symlink' as const), attrs, target: payloadBytes(4095) }),
  fc.record({ kind: fc.constantFrom('fifo' as const, 'socket' as const, 'whiteout' as const), attrs, size: infoSize }),
  fc.record({ kind: fc.constant('chardev' as const), attrs, rdev: fc.integer({ min: 1, max: 0xffffffff }), size: infoSize }),
  fc.record({ kind: fc.constant('blockdev' as const), attrs, rdev: fc.integer({ min: 0, max: 0xffffffff }), size: infoSize }),
);

const children = (node: fc.Arbitrary<Tree>, maxLength: number) =>
  fc.uniqueArray(fc.tuple(nameBytes, node), { selector: ([n]) => n.toString('hex'), maxLength });

const tree: fc.Arbitrary<Tree> = fc.letrec<{ node: Tree }>((tie) => ({
  node: fc.oneof({ depthSize: 'small', withCrossShrink: true }, leaf, fc.record({ kind: fc.constant('dir' as const), attrs, children: children(tie('node'), 5) })),
})).node;

/** A tree as it is generated, before it becomes a manifest. */
export interface TreeInput {
  root: Attrs;
  children: Array<[Buffer, Tree]>;
  /** Which non-directories become hardlinks to an earlier one. */
  links: boolean[];
}

export const treeInput: fc.Arbitrary<TreeInput> = fc.record({
  root: attrs,
  children: children(tree, 8),
  links: fc.array(fc.boolean(), { minLength: 1, maxLength: 6 }),
});

const slashLowest = (b: Buffer) => Buffer.from(b.map((c) => (c === 0x2f ? 0 : c)));

/** Spelled as mountgate spells bytes (text when UTF-8), or always as {"base64"}. */
function spellWith(asBytes: boolean): (b: Buffer) => ByteText {
  return asBytes ? (b) => ({ base64: b.toString('base64') }) : (b) => byteText(b);
}

/** The manifest of a generated tree; `asBytes` spells every name, target and key as {"base64"}. */
export function toManifest(input: TreeInput, asBytes = false): Manifest {
  const spell = spellWith(asBytes);
  const xattrsOf = (a: Attrs) => (a.xattrs.length === 0 ? {} : { xattrs: a.xattrs.map((x) => ({ key: spell(x.key), value: x.value.toString('base64') })) });
  const base = (a: Attrs) => ({ mode: a.mode, uid: a.uid, gid: a.gid, mtime: a.mtime, ...xattrsOf(a) });
  const flat: Array<{ path: Buffer; make: (path: ByteText) => Entry; linkable: boolean }> = [];
  const walk = (dir: Buffer, kids: Array<[Buffer, Tree]>) => {
    for (const [name, node] of kids) {
      const path = Buffer.concat([dir, Buffer.from('/'), name]);
      switch (node.kind) {
        case 'dir':
          flat.push({ path, make: (p) => ({ path: p, type: 'dir', ...base(node.attrs) }), linkable: false });
          walk(path, node.children);
          break;
        case 'file':
          flat.push({
            path, linkable: true,
            make: (p) => ({
              path: p, type: 'file', ...base(node.attrs), size: node.size,
              ...(node.inline ? { inline: node.inline.toString('base64') } : {}),
              ...(node.digest ? { digest: node.digest } : {}),
              ...(node.backing ? { backing: spell(node.backing) } : {}),
            }),
          });
          break;
        case 'symlink':
          flat.push({ path, make: (p) => ({ path: p, type: 'symlink', ...base(node.attrs), target: spell(node.target) }), linkable: true });
          break;
        case 'chardev':
        case 'blockdev':
          flat.push({ path, make: (p) => ({ path: p, type: node.kind, ...base(node.attrs), rdev: node.rdev, ...(node.size ? { size: node.size } : {}) }) as Entry, linkable: true });
          break;
        default:
          flat.push({ path, make: (p) => ({ path: p, type: node.kind, ...base(node.attrs), ...(node.size ? { size: node.size } : {}) }) as Entry, linkable: node.kind !== 'whiteout' });
      }
    }
  };
  walk(Buffer.alloc(0), input.children);
  flat.sort((a, b) => Buffer.compare(slashLowest(a.path), slashLowest(b.path)));
  const entries: Entry[] = [{ path: spell(Buffer.from('/')), type: 'dir', ...base(input.root) }];
  // Hardlinks point at an earlier entry: the one the reader meets first stays the inode.
  const targets: Buffer[] = [];
  flat.forEach((f, i) => {
    if (f.linkable && targets.length > 0 && input.links[i % input.links.length]) {
      entries.push({ path: spell(f.path), type: 'hardlink', target: spell(targets[i % targets.length]!) });
    } else {
      entries.push(f.make(spell(f.path)));
      if (f.linkable) targets.push(f.path);
    }
  });
  return { version: 1, entries };
}

// ---- comparing trees ---------------------------------------------------------------

function sortedKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortedKeys);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortedKeys((v as Record<string, unknown>)[k])]));
  return v;
}

/**
 * The manifest with every {"base64"} value given as text instead (each byte
 * as the character of that code point, which keeps the order of names): the
 * generator's names are mostly not UTF-8, and only text is streamed.
 */
export function asText(m: Manifest): Manifest {
  return JSON.parse(JSON.stringify(m), (_key, v: unknown) => {
    const b64 = (v as { base64?: unknown } | null)?.base64;
    return typeof b64 === 'string' && Object.keys(v as object).length === 1 ? Buffer.from(b64, 'base64').toString('latin1') : v;
  }) as Manifest;
}

/**
 * What an image keeps of a manifest, one line per entry: no directory sizes,
 * no sizes of special files, no digest of a file whose content is inline (the
 * image has no metacopy for it), xattrs in byte order of keys.
 */
export function comparable(m: Manifest): string[] {
  return m.entries.map((e) => {
    const c: Record<string, unknown> = { ...e };
    if (e.type !== 'file' && e.type !== 'symlink' && e.type !== 'hardlink') delete c.size;
    if (e.type === 'file' && (e.inline !== undefined || e.size === 0)) delete c.digest;
    if ('xattrs' in e && e.xattrs) c.xattrs = [...e.xattrs].sort((a, b) => Buffer.compare(bytesOf(a.key), bytesOf(b.key)));
    return JSON.stringify(sortedKeys(c));
  });
}

// ---- fsck.erofs ----------------------------------------------------------------------

let scratch: string | undefined;
export function fsckErofs(image: Buffer): string | undefined {
  scratch ??= mkdtempSync(join(tmpdir(), 'mountgate-fuzz-'));
  const file = join(scratch, 'image.cfs');
  writeFileSync(file, image);
  try {
    execFileSync('fsck.erofs', ['--extract', file], { stdio: 'pipe' });
    return undefined;
  } catch (err) {
    const e = err as { stdout?: Buffer; stderr?: Buffer };
    return `${e.stdout?.toString() ?? ''}${e.stderr?.toString() ?? ''}`;
  }
}
export function cleanupFsck(): void {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
  scratch = undefined;
}

// ---- arbitrary JSON near a manifest -------------------------------------------------

const strangeString = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.constantFrom('', '/', '//', '/.', '/..', '/a/', 'a', '/\0', '/\ud800', '/\udc00x', '\u{1f600}\ud83d', 'user.', 'dir', 'file', 'hardlink', 'whiteout', '-', 'AA==', 'AAA', 'L/8='),
  fc.string({ unit: 'grapheme-ascii', maxLength: 10 }).map((s) => `/${s}`),
  // Lone surrogates anywhere (fast-check's "binary" unit never makes them).
  fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 6 }).map((units) => '/' + String.fromCharCode(...units)),
);
const strangeValue: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: strangeString, weight: 4 },
  { arbitrary: fc.constantFrom(0, -1, 1, 0.5, 2 ** 53, 2 ** 53 + 2, 4294967296, 999999999, 1e9, Number.MAX_VALUE), weight: 2 },
  { arbitrary: fc.constantFrom(null, true, false, [], {}), weight: 1 },
  { arbitrary: fc.record({ base64: fc.oneof(fc.uint8Array({ maxLength: 12 }).map((b) => Buffer.from(b).toString('base64')), strangeString) }), weight: 2 },
  { arbitrary: fc.jsonValue({ maxDepth: 2 }), weight: 1 },
);

/** A path into a JSON value and what to put there (or delete). */
type Edit = { path: number[]; value: unknown; remove: boolean };
const edits = fc.array(fc.record({ path: fc.array(fc.nat(), { minLength: 1, maxLength: 5 }), value: strangeValue, remove: fc.boolean() }), { minLength: 1, maxLength: 4 });

/** Applies edits to a deep copy: each index picks a key (of an object) or an element (of an array) at that depth. */
function applyEdits(value: unknown, list: Edit[]): unknown {
  const copy = JSON.parse(JSON.stringify(value)) as unknown;
  for (const edit of list) {
    let parent: Record<string, unknown> | unknown[] | null = null;
    let key: string | number | null = null;
    let node: unknown = copy;
    for (const step of edit.path) {
      if (node === null || typeof node !== 'object') break;
      const keys = Array.isArray(node) ? node.map((_, i) => i) : Object.keys(node);
      if (keys.length === 0) break;
      parent = node as Record<string, unknown> | unknown[];
      key = keys[step % keys.length]!;
      node = (parent as Record<string, unknown>)[key as string];
    }
    if (parent === null || key === null) continue;
    if (edit.remove && !Array.isArray(parent)) delete (parent as Record<string, unknown>)[key as string];
    else (parent as Record<string, unknown>)[key as string] = edit.value;
  }
  return copy;
}

// ---- the properties --------------------------------------------------------------------

/** Anything but InvalidManifestError is a crash. */
function typedOnly(err: unknown, what: string): void {
  if (err instanceof InvalidManifestError) return;
  const e = err as Error;
  throw new Error(`${what} crashed: ${e?.name}: ${e?.message}\n${e?.stack ?? ''}`);
}

/** Validation of any JSON value: a Manifest or an InvalidManifestError, and what it accepts, the writer builds. */
export function validationProperty(): fc.IProperty<[unknown]> {
  // Xattrs that take (almost) the whole budget of one entry, before the image adds its own.
  const nearBudget = fc.tuple(treeInput, fc.nat(), fc.integer({ min: 32500, max: 32767 - 12 - 7 - 6 })).map(([input, pick, size]) => {
    const m = toManifest(input);
    const e = m.entries[pick % m.entries.length]!;
    if (e.type !== 'hardlink') e.xattrs = [{ key: 'user.a', value: Buffer.alloc(size).toString('base64') }];
    return m;
  });
  const candidates = fc.oneof(
    { arbitrary: fc.jsonValue({ maxDepth: 4 }), weight: 1 },
    { arbitrary: fc.tuple(treeInput, edits, fc.boolean()).map(([input, e, asBytes]) => applyEdits(toManifest(input, asBytes), e)), weight: 4 },
    { arbitrary: nearBudget, weight: 1 },
  );
  return fc.property(candidates, (value) => {
    let manifest: Manifest;
    try {
      manifest = validateManifest(value);
    } catch (err) {
      typedOnly(err, 'validateManifest');
      return;
    }
    try {
      writeImage(manifest);
    } catch (err) {
      throw new Error(`the writer refused what validation accepted: ${(err as Error).message}\n${JSON.stringify(value).slice(0, 3000)}`);
    }
  });
}

/** Generated trees: valid, deterministic, spelling-independent, and the reader gives them back; every `fsckEvery`-th also passes fsck.erofs. */
export function writerProperty(fsckEvery = 0): fc.IProperty<[TreeInput]> {
  let run = 0;
  return fc.property(treeInput, (input) => {
    const manifest = toManifest(input);
    validateManifest(manifest);
    const image = writeImage(manifest, { maxVersion: 0 });
    if (!writeImage(manifest, { maxVersion: 0 }).equals(image)) throw new Error('the writer is not deterministic');
    if (!writeImage(toManifest(input, true), { maxVersion: 0 }).equals(image)) throw new Error('spelling names as {"base64"} changed the image');
    const back = comparable(imageToManifest(image)).join('\n');
    const sent = comparable(manifest).join('\n');
    if (back !== sent) throw new Error(`the reader does not give the tree back:\n--- sent\n${sent}\n--- read\n${back}`);
    // fsck.erofs --extract reads the data of every file; a file of more than 512
    // chunks (2^52 bytes) with a digest keeps its chunk index out of line, as the
    // writer lays it out (with mkcomposefs), and fsck reads it as a mapping.
    // composefs never reads such data from the image (overlayfs redirects it).
    const huge = manifest.entries.some((e) => e.type === 'file' && e.size > 2 ** 52);
    if (fsckEvery > 0 && run++ % fsckEvery === 0 && !huge) {
      const problem = fsckErofs(image);
      if (problem !== undefined) throw new Error(`fsck.erofs: ${problem}`);
    }
  });
}

/** manifest -> dump text -> manifest is the identity, and so is the dump text on a second trip. */
export function manifestDumpProperty(): fc.IProperty<[TreeInput]> {
  return fc.property(treeInput, (input) => {
    const manifest = toManifest(input);
    const text = serializeDump(manifestToDump(manifest));
    const back = manifestFromDumpText(text);
    if (JSON.stringify(sortedKeys(back)) !== JSON.stringify(sortedKeys(manifest))) throw new Error(`manifest -> dump -> manifest changed it:\n${text.toString('latin1').slice(0, 3000)}`);
    if (!serializeDump(manifestToDump(back)).equals(text)) throw new Error('the dump text changed on the second trip');
  });
}

// Dump lines with arbitrary bytes wherever the format allows them, as strict parsing reads them.
const anyBytes = (max: number, min = 0) => fc.uint8Array({ minLength: min, maxLength: max }).map((a) => Buffer.from(a));
const fileTypes = [0o100000, 0o040000, 0o120000, 0o060000, 0o020000, 0o140000, 0o010000];
const dumpLine: fc.Arbitrary<DumpEntry> = fc
  .record({
    path: anyBytes(40, 1),
    type: fc.constantFrom(...fileTypes),
    perm: fc.integer({ min: 0, max: 0o7777 }),
    hardlink: fc.boolean(),
    nlink: fc.integer({ min: 0, max: 0xffffffff }),
    uid: fc.integer({ min: 0, max: 0xffffffff }),
    gid: fc.integer({ min: 0, max: 0xffffffff }),
    rdev: fc.integer({ min: 0, max: 0xffffffff }),
    size: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    mtimeSec: fc.bigInt({ min: 0n, max: (1n << 63n) - 1n }),
    mtimeNsec: fc.integer({ min: 0, max: 999999999 }),
    payload: fc.option(anyBytes(60, 1), { nil: null }),
    content: fc.option(anyBytes(300), { nil: null }),
    digest: fc.option(fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString('hex')), { nil: null }),
    xattrs: fc.uniqueArray(fc.record({ key: anyBytes(20), value: anyBytes(40) }), { selector: (x) => x.key.toString('hex'), maxLength: 4 }),
  })
  .map((r): DumpEntry => {
    const mode = r.type | r.perm;
    if (r.hardlink) {
      // What the parser keeps of a hardlink line: its path, mode and target.
      return { path: r.path, size: 0n, mode, hardlink: true, nlink: 0, uid: 0, gid: 0, rdev: 0, mtimeSec: 0n, mtimeNsec: 0, payload: r.payload ?? Buffer.from('/t'), content: null, digest: null, xattrs: [] };
    }
    const isDevice = r.type === 0o020000 || r.type === 0o060000;
    const e: DumpEntry = { path: r.path, size: r.size, mode, hardlink: false, nlink: r.nlink, uid: r.uid, gid: r.gid, rdev: isDevice ? r.rdev : 0, mtimeSec: r.mtimeSec, mtimeNsec: r.mtimeNsec, payload: r.payload, content: r.content, digest: r.digest, xattrs: r.xattrs };
    if (r.type === 0o120000) {
      e.payload = r.payload ?? Buffer.from('target');
      e.size = BigInt(e.payload.length);
      e.content = null;
    } else if (e.content !== null) e.size = BigInt(e.content.length);
    return e;
  })
  .filter((e) => !(e.hardlink && (e.mode & 0o170000) === 0o040000));

export const dumpLines = fc.array(dumpLine, { minLength: 1, maxLength: 8 });

/** parse(serialize(x)) is x, for any dump lines with any bytes in them. */
export function dumpParseProperty(): fc.IProperty<[DumpEntry[]]> {
  return fc.property(dumpLines, (lines) => {
    const text = serializeDump(lines);
    const parsed = parseDump(text);
    const show = (l: DumpEntry[]) => serializeDump(l).toString('latin1');
    if (parsed.length !== lines.length || show(parsed) !== show(lines)) throw new Error(`parse(serialize(x)) is not x:\n${text.toString('latin1')}`);
    for (let i = 0; i < lines.length; i++) {
      if (!parsed[i]!.path.equals(lines[i]!.path)) throw new Error(`line ${i + 1}: path bytes differ`);
    }
  });
}

/** One byte-level change: flip, set, insert, delete, or repeat a slice. */
const mutation = fc.record({ at: fc.nat(), kind: fc.constantFrom('flip', 'set', 'insert', 'delete', 'repeat'), byte: fc.constantFrom(0x00, 0x0a, 0x20, 0x2f, 0x3d, 0x40, 0x5c, 0x2d, 0x78, 0x2e, 0xff, 0x80, 0x39), bit: fc.integer({ min: 0, max: 7 }), len: fc.integer({ min: 1, max: 64 }) });
type Mutation = { at: number; kind: string; byte: number; bit: number; len: number };

export function mutate(data: Buffer, list: Mutation[]): Buffer {
  let out = Buffer.from(data);
  for (const m of list) {
    if (out.length === 0) break;
    const at = m.at % out.length;
    if (m.kind === 'flip') out[at] = out[at]! ^ (1 << m.bit);
    else if (m.kind === 'set') out[at] = m.byte;
    else if (m.kind === 'insert') out = Buffer.concat([out.subarray(0, at), Buffer.from([m.byte]), out.subarray(at)]);
    else if (m.kind === 'delete') out = Buffer.concat([out.subarray(0, at), out.subarray(Math.min(out.length, at + m.len))]);
    else out = Buffer.concat([out.subarray(0, at + m.len), out.subarray(at, at + m.len), out.subarray(at + m.len)]);
  }
  return out;
}

/** A valid dump, then mutated: parsing (strict and lenient), converting and building never crash. */
export function dumpMutationProperty(): fc.IProperty<[TreeInput, Mutation[]]> {
  return fc.property(treeInput, fc.array(mutation, { minLength: 1, maxLength: 6 }), (input, list) => {
    const text = mutate(serializeDump(manifestToDump(toManifest(input))), list);
    for (const strict of [true, false]) {
      try {
        parseDump(text, { strict });
      } catch (err) {
        typedOnly(err, `parseDump (strict: ${strict})`);
      }
      let manifest: Manifest;
      try {
        manifest = manifestFromDumpText(text, { strict });
      } catch (err) {
        typedOnly(err, `manifestFromDumpText (strict: ${strict})`);
        continue;
      }
      try {
        writeImage(manifest);
      } catch (err) {
        throw new Error(`the writer refused a manifest the converter made: ${(err as Error).message}`);
      }
    }
  });
}

/** A valid image, then mutated: the reader gives dump entries or an InvalidManifestError, never a crash. */
export function imageMutationProperty(): fc.IProperty<[TreeInput, Mutation[]]> {
  const imageMutation = fc.record({ at: fc.nat(), kind: fc.constantFrom('flip', 'set', 'flip', 'set', 'delete'), byte: fc.constantFrom(0x00, 0xff, 0x01, 0x80, 0x7f, 0x10), bit: fc.integer({ min: 0, max: 7 }), len: fc.integer({ min: 1, max: 64 }) });
  return fc.property(treeInput, fc.array(imageMutation, { minLength: 1, maxLength: 8 }), (input, list) => {
    const image = mutate(writeImage(toManifest(input)), list);
    try {
      imageToDumpEntries(image);
    } catch (err) {
      typedOnly(err, 'imageToDumpEntries');
    }
  });
}

export const properties = {
  validation: validationProperty,
  writer: writerProperty,
  'manifest-dump': manifestDumpProperty,
  'dump-parse': dumpParseProperty,
  'dump-mutation': dumpMutationProperty,
  'image-mutation': imageMutationProperty,
} as const;
