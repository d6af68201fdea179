// The pure client side of images: the manifest of a real directory tree
// (digests as `fsverity digest` computes them, hardlinks, symlinks, order,
// owners through an id map), finding objects in an object directory, image
// references, and the exact bytes uploadImage streams to PutObjects (against
// a stand-in broker object: no bus here).
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { closeSync, createReadStream, chmodSync, existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CONTENT_BY_FD, findObjects, manifestFromDirectory, manifestObjects, objectPath, OVERFLOW_ID, recordHeader, resolveImageRef, uploadImage,
} from '../../src/client/images.js';
import type { ImageListing, MountgateBroker } from '../../src/client/broker.js';
import { listedNames } from '../../src/client/image-ref.js';
import type { Entry, FileEntry } from '../../src/schema/types.generated.js';
import { comparePaths } from '../../src/manifest/paths.js';
import { fileSeals, IMMUTABLE_SEALS } from '../../src/sys/syscalls.js';

const dir = mkdtempSync(join(tmpdir(), 'mountgate-images-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function toolDigest(file: string): string {
  const m = /^sha256:([0-9a-f]{64}) /.exec(execFileSync('fsverity', ['digest', file], { encoding: 'utf8' }));
  if (!m) throw new Error('unexpected fsverity output');
  return m[1]!;
}

const big = randomBytes(1_300_000);
const tree = join(dir, 'tree');
mkdirSync(join(tree, 'sub', 'deeper'), { recursive: true });
writeFileSync(join(tree, 'hello.txt'), 'hello\n');
writeFileSync(join(tree, 'big.bin'), big);
writeFileSync(join(tree, 'empty'), '');
writeFileSync(join(tree, 'sub', 'deeper', 'x'), 'hello\n'); // same content as hello.txt: one object
linkSync(join(tree, 'hello.txt'), join(tree, 'sub', 'link-to-hello'));
symlinkSync('../hello.txt', join(tree, 'sub', 'sym'));
writeFileSync(join(tree, 'sub.txt'), 'sorts after "sub" and its contents\n');
writeFileSync(join(tree, 'sub-dash'), '"-" sorts before "/" in plain string order but after it in path order\n');
writeFileSync(join(tree, 'Zed'), 'upper case sorts first\n');
writeFileSync(join(tree, 'é'), 'a multi-byte name sorts by its UTF-8 bytes\n');
execFileSync('mkfifo', [join(tree, 'fifo')]);
chmodSync(join(tree, 'hello.txt'), 0o4755);
utimesSync(join(tree, 'big.bin'), 1_700_000_000.25, 1_700_000_000.25);

t.test('manifestFromDirectory records every kind, in path order, with fs-verity digests', async (tt) => {
  const { manifest, sources } = await manifestFromDirectory(tree, { name: 'sample' });
  tt.equal(manifest.name, 'sample');
  const paths = manifest.entries.map((e) => e.path);
  tt.same(paths, [...paths].sort(comparePaths), 'entries are in manifest path order');
  tt.same(paths, ['/', '/Zed', '/big.bin', '/empty', '/fifo', '/hello.txt', '/sub', '/sub/deeper', '/sub/deeper/x', '/sub/link-to-hello', '/sub/sym', '/sub-dash', '/sub.txt', '/é']);
  const by = new Map<string, Entry>(manifest.entries.map((e) => [e.path, e]));

  const hello = by.get('/hello.txt') as FileEntry;
  tt.equal(hello.digest, toolDigest(join(tree, 'hello.txt')), 'small file digest = fsverity digest');
  tt.equal(hello.size, 6);
  tt.equal(hello.mode, 0o4755, 'mode keeps the setuid bit and nothing of the type');
  tt.equal(hello.backing, objectPath(hello.digest!), 'backing is the store path xx/rest');
  tt.notOk(hello.inline, 'never inlined');
  const bigEntry = by.get('/big.bin') as FileEntry;
  tt.equal(bigEntry.digest, toolDigest(join(tree, 'big.bin')), 'multi-level file digest = fsverity digest');
  tt.equal(bigEntry.size, big.length);
  tt.same(bigEntry.mtime, { sec: 1_700_000_000, nsec: 250_000_000 }, 'mtime as seconds and nanoseconds');
  const empty = by.get('/empty') as FileEntry;
  tt.equal(empty.size, 0);
  tt.notOk(empty.digest, 'an empty file has no digest (nothing to upload)');

  tt.same(by.get('/sub/link-to-hello'), { path: '/sub/link-to-hello', type: 'hardlink', target: '/hello.txt' }, 'the second name of an inode is a hardlink to the first');
  tt.match(by.get('/sub/sym'), { type: 'symlink', target: '../hello.txt' }, 'symlinks are recorded, not followed');
  tt.match(by.get('/fifo'), { type: 'fifo' });
  tt.match(by.get('/sub'), { type: 'dir' });

  tt.equal(sources.size, 2 + 4, 'one source per distinct content (hello.txt and x share one)');
  tt.equal(sources.get(hello.digest!), join(tree, 'hello.txt'));
  tt.same([...manifestObjects(manifest).keys()].sort(), [...sources.keys()].sort(), 'every object the manifest needs has a source');
});

t.test('owners go through the id map; unmapped owners become 65534', async (tt) => {
  const uid = process.getuid!();
  const gid = process.getgid!();
  const mapped = await manifestFromDirectory(tree, { uidMap: [{ from: 0, to: uid, count: 1 }], gidMap: [{ from: 7, to: gid, count: 1 }] });
  tt.match(mapped.manifest.entries[0], { uid: 0, gid: 7 });
  const unmapped = await manifestFromDirectory(tree, { uidMap: [{ from: 0, to: uid + 1, count: 1 }] });
  tt.match(unmapped.manifest.entries[0], { uid: OVERFLOW_ID, gid });
  const asIs = await manifestFromDirectory(tree);
  tt.match(asIs.manifest.entries[0], { uid, gid, path: '/', type: 'dir' });
  tt.equal(asIs.manifest.name, 'tree', 'the default name is the directory name');
});

t.test('manifestFromDirectory keeps names and symlink targets that are not UTF-8, as {"base64"}', async (tt) => {
  const raw = Buffer.from(join(dir, 'bytes'));
  const at = (...parts: Array<string | number[]>) => Buffer.concat([raw, ...parts.map((p) => Buffer.concat([Buffer.from('/'), typeof p === 'string' ? Buffer.from(p) : Buffer.from(p)]))]);
  mkdirSync(raw as unknown as string);
  mkdirSync(at([0x63, 0x61, 0x66, 0xe9]) as unknown as string); // "caf\xe9", Latin-1
  writeFileSync(at([0x63, 0x61, 0x66, 0xe9], [0xff, 0xfe]) as unknown as string, 'latin-1 file\n');
  linkSync(at([0x63, 0x61, 0x66, 0xe9], [0xff, 0xfe]) as unknown as string, at('é-link') as unknown as string);
  symlinkSync(Buffer.from([0x2e, 0x2e, 0x2f, 0xc0]) as unknown as string, at('sym') as unknown as string);
  const { manifest, sources } = await manifestFromDirectory(raw.toString());
  const b64 = (...b: number[]) => ({ base64: Buffer.from(b).toString('base64') });
  tt.same(manifest.entries.map((e) => e.path), ['/', b64(0x2f, 0x63, 0x61, 0x66, 0xe9), b64(0x2f, 0x63, 0x61, 0x66, 0xe9, 0x2f, 0xff, 0xfe), '/sym', '/é-link'], 'byte order, bytes kept');
  tt.match(manifest.entries[3], { type: 'symlink', target: b64(0x2e, 0x2e, 0x2f, 0xc0) });
  tt.same(manifest.entries[4], { path: '/é-link', type: 'hardlink', target: b64(0x2f, 0x63, 0x61, 0x66, 0xe9, 0x2f, 0xff, 0xfe) });
  const file = manifest.entries[2] as FileEntry;
  const source = sources.get(file.digest!)!;
  tt.ok(Buffer.isBuffer(source) && source.equals(at([0x63, 0x61, 0x66, 0xe9], [0xff, 0xfe])), 'the source is the exact host path');
  tt.equal(readFileSync(source).toString(), 'latin-1 file\n');
});

t.test('manifestFromDirectory refuses what is not a directory', async (tt) => {
  await tt.rejects(manifestFromDirectory(join(tree, 'hello.txt')), /is not a directory/);
});

t.test('findObjects finds DIR/xx/rest', async (tt) => {
  const { manifest } = await manifestFromDirectory(tree);
  const objects = join(dir, 'objects');
  const digest = (manifest.entries.find((e) => e.path === '/hello.txt') as FileEntry).digest!;
  mkdirSync(join(objects, digest.slice(0, 2)), { recursive: true });
  writeFileSync(join(objects, objectPath(digest)), 'hello\n');
  const found = findObjects(objects, manifestObjects(manifest).keys());
  tt.same([...found.keys()], [digest]);
  tt.equal(found.get(digest), join(objects, digest.slice(0, 2), digest.slice(2)));
});

t.test('recordHeader: 32 raw digest bytes, then the size as little-endian u64', async (tt) => {
  const d = 'ab'.repeat(31) + '01';
  const h = recordHeader(d, 0x0102030405);
  tt.equal(h.length, 40);
  tt.equal(h.subarray(0, 32).toString('hex'), d);
  tt.same([...h.subarray(32)], [5, 4, 3, 2, 1, 0, 0, 0]);
});

/** Parses a PutObjects stream into records. */
function parseRecords(buf: Buffer): { digest: string; content: Buffer }[] {
  const out: { digest: string; content: Buffer }[] = [];
  for (let at = 0; at < buf.length; ) {
    const digest = buf.subarray(at, at + 32).toString('hex');
    const size = Number(buf.readBigUInt64LE(at + 32));
    out.push({ digest, content: buf.subarray(at + 40, at + 40 + size) });
    at += 40 + size;
  }
  return out;
}

/** Reads a PutObjects socket as the broker does: headers, fds passed with them (read by position), one acknowledgement byte per record. */
async function readFileRecords(fd: number): Promise<{ files: { digest: string; byFd: boolean; content: Buffer }[]; streamBytes: number }> {
  const { USocket } = createRequire(import.meta.url)('usocket') as { USocket: new (o: { fd: number }) => NodeJS.EventEmitter & { read(a: null, b: null): { data: Buffer | null; fds: number[] } | null; write(c: { data: Buffer }): void; destroy(): void } };
  const socket = new USocket({ fd });
  let data = Buffer.alloc(0);
  const fds: number[] = [];
  await new Promise<void>((resolve) => {
    socket.on('readable', () => {
      for (let got = socket.read(null, null); got && (got.data || got.fds.length); got = socket.read(null, null)) {
        if (got.data) data = Buffer.concat([data, got.data]);
        fds.push(...got.fds);
        const records = Math.floor((got.data?.length ?? 0) / 40);
        if (records > 0) socket.write({ data: Buffer.alloc(records) });
      }
    });
    socket.on('end', () => resolve());
  });
  const files = [];
  for (let at = 0; at < data.length; at += 40) {
    const raw = data.readBigUInt64LE(at + 32);
    const file = fds.shift()!;
    files.push({ digest: data.subarray(at, at + 32).toString('hex'), byFd: (raw & CONTENT_BY_FD) !== 0n, content: readFileSync(file) });
    closeSync(file);
  }
  socket.destroy();
  return { files, streamBytes: data.length };
}

/** A stand-in for MountgateBroker: records the manifest and reads the stream to EOF. */
function fakeBroker(missing: (all: string[]) => string[], opts: { failPut?: boolean; files?: boolean } = {}) {
  const seen: { manifestText?: string; manifestPath?: string; manifestSeals?: number; stream?: Buffer; files?: { digest: string; byFd: boolean; content: Buffer }[]; streamBytes?: number; putCalls: number } = { putCalls: 0 };
  const broker = {
    async addImage(fd: number) {
      seen.manifestPath = readlinkSync(`/proc/self/fd/${fd}`);
      seen.manifestSeals = fileSeals(fd);
      seen.manifestText = readFileSync(fd, 'utf8');
      const m = JSON.parse(seen.manifestText) as { entries: Entry[] };
      const all = m.entries.flatMap((e) => (e.type === 'file' && e.digest ? [e.digest] : []));
      return { imageId: 'f'.repeat(64), missing: missing([...new Set(all)]) };
    },
    async putObjects(fd: number) {
      seen.putCalls++;
      if (opts.failPut) {
        await new Promise((r) => setTimeout(r, 50));
        throw new Error('refused by the stand-in broker');
      }
      if (opts.files) {
        Object.assign(seen, await readFileRecords(fd));
        return { objects: seen.files!.length, bytes: seen.files!.reduce((n, f) => n + f.content.length, 0) };
      }
      const chunks: Buffer[] = [];
      for await (const c of createReadStream('', { fd, autoClose: false })) chunks.push(c as Buffer);
      seen.stream = Buffer.concat(chunks);
      const recs = parseRecords(seen.stream);
      return { objects: recs.length, bytes: recs.reduce((n, r) => n + r.content.length, 0) };
    },
  };
  return { broker: broker as unknown as MountgateBroker, seen };
}

t.test('uploadImage sends the manifest as a sealed memfd and, through a pipe, streams exactly the missing objects', async (tt) => {
  const { manifest, sources } = await manifestFromDirectory(tree);
  const bigDigest = (manifest.entries.find((e) => e.path === '/big.bin') as FileEntry).digest!;
  const helloDigest = (manifest.entries.find((e) => e.path === '/hello.txt') as FileEntry).digest!;
  const { broker, seen } = fakeBroker(() => [bigDigest, helloDigest]);
  const progress: { objects: number; bytes: number }[] = [];
  const result = await uploadImage(broker, manifest, sources, { onProgress: (p) => progress.push(p), transport: 'pipe' });
  tt.same(JSON.parse(seen.manifestText!), manifest, 'the broker reads the manifest JSON from the fd');
  tt.match(seen.manifestPath!, /^\/memfd:mountgate-manifest/, 'the manifest is a memfd');
  tt.equal(seen.manifestSeals! & IMMUTABLE_SEALS, IMMUTABLE_SEALS, 'sealed against writing, growing and shrinking');
  const recs = parseRecords(seen.stream!);
  tt.same(recs.map((r) => r.digest), [bigDigest, helloDigest], 'one record per missing digest, in the order asked');
  tt.ok(recs[0]!.content.equals(big), 'the content of big.bin, whole');
  tt.equal(recs[1]!.content.toString(), 'hello\n');
  tt.same(result, { imageId: 'f'.repeat(64), uploaded: { objects: 2, bytes: big.length + 6 } });
  const last = progress[progress.length - 1]!;
  tt.match(last, { objects: 2, totalObjects: 2, bytes: big.length + 6, totalBytes: big.length + 6 }, 'progress ends complete');
});

t.test('uploadImage passes the files themselves by default: headers marked "by fd", one open read-only fd each, no content bytes', async (tt) => {
  const { manifest, sources } = await manifestFromDirectory(tree);
  const bigDigest = (manifest.entries.find((e) => e.path === '/big.bin') as FileEntry).digest!;
  const helloDigest = (manifest.entries.find((e) => e.path === '/hello.txt') as FileEntry).digest!;
  const { broker, seen } = fakeBroker(() => [bigDigest, helloDigest], { files: true });
  const result = await uploadImage(broker, manifest, sources);
  tt.same(seen.files!.map((f) => f.digest), [bigDigest, helloDigest], 'one record per missing digest, in the order asked');
  tt.ok(seen.files!.every((f) => f.byFd), 'each header says its content is a passed fd');
  tt.equal(seen.streamBytes, 80, 'the socket carried the two headers and nothing else');
  tt.ok(seen.files![0]!.content.equals(big), 'the fd of big.bin reads its content');
  tt.equal(seen.files![1]!.content.toString(), 'hello\n');
  tt.same(result, { imageId: 'f'.repeat(64), uploaded: { objects: 2, bytes: big.length + 6 } });
});

t.test('uploadImage: nothing missing means no PutObjects call', async (tt) => {
  const { manifest, sources } = await manifestFromDirectory(tree);
  const { broker, seen } = fakeBroker(() => []);
  tt.same(await uploadImage(broker, manifest, sources), { imageId: 'f'.repeat(64), uploaded: { objects: 0, bytes: 0 } });
  tt.equal(seen.putCalls, 0);
});

t.test('uploadImage: a missing digest without a source names it and the paths that need it', async (tt) => {
  const { manifest } = await manifestFromDirectory(tree);
  const helloDigest = (manifest.entries.find((e) => e.path === '/hello.txt') as FileEntry).digest!;
  const { broker, seen } = fakeBroker(() => [helloDigest]);
  await tt.rejects(uploadImage(broker, manifest, new Map()), { name: 'NotFoundError', message: new RegExp(`${helloDigest} \\(needed by /hello.txt, /sub/deeper/x\\)`) });
  tt.equal(seen.putCalls, 0);
});

t.test('uploadImage: a broker that refuses mid-stream ends the upload with its reason', async (tt) => {
  const { manifest, sources } = await manifestFromDirectory(tree);
  const { broker } = fakeBroker((all) => all, { failPut: true });
  await tt.rejects(uploadImage(broker, manifest, sources), /refused by the stand-in broker/);
});

t.test('resolveImageRef: id, prefix of 8+, or unique name', async (tt) => {
  const img = (id: string, name?: string): ImageListing => ({ id, ...(name ? { name } : {}), entries: 1, objects: 0, missing: 0, bytes: 0, added: '' });
  const a = img('aaaaaaaa11' + '0'.repeat(54), 'tools');
  const b = img('aaaaaaaa22' + '0'.repeat(54), 'base');
  const c = img('cccccccc33' + '0'.repeat(54), 'base');
  const all = [a, b, c];
  tt.equal(resolveImageRef(all, a.id), a);
  tt.equal(resolveImageRef(all, 'aaaaaaaa1'), a);
  tt.equal(resolveImageRef(all, 'cccccccc'), c);
  tt.same(resolveImageRef(all, 'tools'), { ...a, byName: true }, 'by name (a listing of a broker from before several names: name alone)');
  tt.throws(() => resolveImageRef(all, 'aaaaaaaa'), /start of 2 image ids/);
  tt.throws(() => resolveImageRef(all, 'base'), /2 of your images are named base/);
  tt.throws(() => resolveImageRef(all, 'cccc'), { name: 'NotFoundError', message: /at least 8 characters/ });
  tt.throws(() => resolveImageRef(all, 'nope'), /you have no image nope/);
  // Several names of one image: found by any, as that name (its import record is that name's); by id, as the last given.
  const tagged: ImageListing = { ...img('dddddddd44' + '0'.repeat(54), 'two'), names: ['one', 'two'] };
  tt.same(resolveImageRef([...all, tagged], 'one'), { ...tagged, name: 'one', byName: true });
  tt.same(resolveImageRef([...all, tagged], 'two'), { ...tagged, name: 'two', byName: true });
  tt.equal(resolveImageRef([...all, tagged], tagged.id), tagged);
  tt.equal(listedNames(tagged).join(), 'one,two');
  tt.equal(listedNames(a).join(), 'tools', 'an older broker lists name alone');
});
