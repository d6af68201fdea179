// Runs AS A TEST USER: registers a synthetic image of ENTRIES entries whose
// files share OBJECTS distinct contents, uploads the objects, then times
// MountImage calls (call to usable mount fd) and, as the bus's share of the
// same run, GetInfo. With "keep" the image stays registered (the bench mounts
// its file itself as the reference, then removes it); prints JSON.
//   node mount-client.mjs ENTRIES OBJECTS CALLS [keep]
import { closeSync, createWriteStream } from 'node:fs';
import { join } from 'node:path';

const pkg = process.env.MOUNTGATE_TEST_PKG;
const { connect } = await import(join(pkg, 'dist', 'src', 'index.js'));
const { FsVerityHasher } = await import(join(pkg, 'dist', 'src', 'verity', 'fsverity.js'));
const { pipe, sealedMemfd } = await import(join(pkg, 'dist', 'src', 'sys', 'syscalls.js'));
const { recordHeader } = await import(join(pkg, 'dist', 'src', 'client', 'images.js'));
const { syntheticEntries } = await import(join(pkg, 'bench', 'lib', 'synthetic-tree.mjs'));
const [entries, objects, calls] = process.argv.slice(2, 5).map(Number);
const keep = process.argv[5] === 'keep';

/** Content k: small and distinct (its index spelled out), a few blocks for the first 16. */
const content = (k) => (k < 16 ? Buffer.alloc(8192 + k, 65 + k) : Buffer.from(`object ${k}\n`));
const digests = Array.from({ length: objects }, (_, k) => new FsVerityHasher().update(content(k)).digest().toString('hex'));
// File i has content i mod OBJECTS.
const list = syntheticEntries(entries, objects, (k) => ({ size: content(k).length, digest: digests[k] }));
const broker = await connect();
const fd = sealedMemfd('bench-manifest', Buffer.from(JSON.stringify({ version: 1, name: `bench-${entries}-${objects}`, entries: list })));
let t0 = performance.now();
const { imageId, missing } = await broker.addImage(fd);
const addMs = performance.now() - t0;
closeSync(fd);
t0 = performance.now();
if (missing.length > 0) {
  const index = new Map(digests.map((d, k) => [d, k]));
  const [r, w] = pipe();
  const put = broker.putObjects(r);
  const ws = createWriteStream(null, { fd: w });
  for (const d of missing) {
    const c = content(index.get(d));
    ws.write(recordHeader(d, c.length));
    if (!ws.write(c)) await new Promise((resolve) => ws.once('drain', resolve));
  }
  ws.end();
  await put;
  closeSync(r);
}
const putMs = performance.now() - t0;
const samples = { GetInfo: [], MountImage: [] };
let info;
for (let k = 0; k < 5; k++) {
  const m = await broker.mountImage(imageId);
  info = m.info;
  closeSync(m.mountFd);
}
for (let k = 0; k < calls; k++) {
  t0 = performance.now();
  await broker.getInfo();
  samples.GetInfo.push(performance.now() - t0);
  t0 = performance.now();
  const { mountFd } = await broker.mountImage(imageId);
  samples.MountImage.push(performance.now() - t0);
  closeSync(mountFd);
}
if (!keep) await broker.removeImage(imageId);
broker.close();
process.stdout.write(JSON.stringify({ imageId, entries: list.length, objects, addMs, putMs, info, samples }));
process.exit(0);
