// Runs AS A TEST USER: images of many small objects, for the tests of big
// removals. Object k's content is `object k` (its digest is its name in the
// store); an image holds the objects FROM..TO-1, one file each.
//   node objects-client.mjs add FROM TO          AddImage and upload every object; prints {imageId, missing, put}
//   node objects-client.mjs add-list K,K,...     the same, of the objects listed
//   node objects-client.mjs remove ID            RemoveImage; prints {ok}
//   node objects-client.mjs list-until STOPFILE  ListImages back to back until STOPFILE exists; prints {calls}
//   node objects-client.mjs list                 ListImages once; prints {images}
import { closeSync, createWriteStream, existsSync } from 'node:fs';
import { join } from 'node:path';

const pkg = process.env.MOUNTGATE_TEST_PKG;
const { connect } = await import(join(pkg, 'dist', 'src', 'index.js'));
const { FsVerityHasher } = await import(join(pkg, 'dist', 'src', 'verity', 'fsverity.js'));
const { pipe, sealedMemfd } = await import(join(pkg, 'dist', 'src', 'sys', 'syscalls.js'));
const { recordHeader } = await import(join(pkg, 'dist', 'src', 'client', 'images.js'));

const [what, a, b] = process.argv.slice(2);
const content = (k) => Buffer.from(`object ${k}\n`);
const digestOf = (buf) => new FsVerityHasher().update(buf).digest().toString('hex');
const mtime = { sec: 1700000000, nsec: 0 };
const broker = await connect();
let out;
if (what === 'add' || what === 'add-list') {
  const ks = what === 'add' ? Array.from({ length: Number(b) - Number(a) }, (_, i) => Number(a) + i) : a.split(',').map(Number);
  const entries = [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime }];
  const byDigest = new Map();
  for (const k of ks.sort((x, y) => x - y)) {
    const c = content(k);
    const digest = digestOf(c);
    byDigest.set(digest, c);
    entries.push({ path: `/f${String(k).padStart(8, '0')}`, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size: c.length, digest });
  }
  const fd = sealedMemfd('objects-manifest', Buffer.from(JSON.stringify({ version: 1, entries })));
  const { imageId, missing } = await broker.addImage(fd);
  closeSync(fd);
  const [r, w] = pipe();
  const put = broker.putObjects(r);
  const ws = createWriteStream(null, { fd: w });
  for (const d of missing) {
    ws.write(recordHeader(d, byDigest.get(d).length));
    if (!ws.write(byDigest.get(d))) await new Promise((res) => ws.once('drain', res));
  }
  ws.end();
  out = { imageId, missing: missing.length, put: await put };
  closeSync(r);
} else if (what === 'remove') {
  await broker.removeImage(a);
  out = { ok: true };
} else if (what === 'list-until') {
  let calls = 0;
  while (!existsSync(a)) {
    await broker.listImages();
    calls++;
  }
  out = { calls };
} else if (what === 'list') {
  out = { images: await broker.listImages() };
} else throw new Error(`unknown ${what}`);
broker.close();
process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(0));
