// Runs AS A TEST USER: registers a synthetic image of N entries (files share
// a few distinct objects), uploads the objects, then times MountImage calls
// (call to usable mount fd) and, as the baseline of the same run, GetInfo.
import { closeSync, createWriteStream } from 'node:fs';
import { join } from 'node:path';

const pkg = process.env.MOUNTGATE_TEST_PKG;
const { connect } = await import(join(pkg, 'dist', 'src', 'index.js'));
const { FsVerityHasher } = await import(join(pkg, 'dist', 'src', 'verity', 'fsverity.js'));
const { pipe, sealedMemfd } = await import(join(pkg, 'dist', 'src', 'sys', 'syscalls.js'));
const { recordHeader } = await import(join(pkg, 'dist', 'src', 'client', 'images.js'));
const [entries, calls] = [Number(process.argv[2]), Number(process.argv[3])];

const mtime = { sec: 1700000000, nsec: 0 };
const contents = Array.from({ length: 16 }, (_, k) => Buffer.alloc(8192 + k, 65 + k));
const digests = contents.map((c) => new FsVerityHasher().update(c).digest().toString('hex'));
// Directories of 1000 files each, names sorting in path order.
const list = [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime }];
const dirs = Math.ceil((entries - 1) / 1001);
for (let d = 0; d < dirs && list.length < entries; d++) {
  const dir = `/d${String(d).padStart(5, '0')}`;
  list.push({ path: dir, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime });
  for (let f = 0; f < 1000 && list.length < entries; f++) {
    const k = (d + f) % 16;
    list.push({ path: `${dir}/f${String(f).padStart(4, '0')}`, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size: contents[k].length, digest: digests[k] });
  }
}
const broker = await connect();
const fd = sealedMemfd('bench-manifest', Buffer.from(JSON.stringify({ version: 1, name: `bench-${entries}`, entries: list })));
let t0 = process.hrtime.bigint();
const { imageId, missing } = await broker.addImage(fd);
const addMs = Number(process.hrtime.bigint() - t0) / 1e6;
closeSync(fd);
if (missing.length > 0) {
  const [r, w] = pipe();
  const put = broker.putObjects(r);
  const ws = createWriteStream(null, { fd: w });
  for (const d of missing) {
    const c = contents[digests.indexOf(d)];
    ws.write(recordHeader(d, c.length));
    ws.write(c);
  }
  ws.end();
  await put;
  closeSync(r);
}
const samples = { GetInfo: [], MountImage: [] };
for (let k = 0; k < 5; k++) closeSync((await broker.mountImage(imageId)).mountFd);
for (let k = 0; k < calls; k++) {
  t0 = process.hrtime.bigint();
  await broker.getInfo();
  samples.GetInfo.push(Number(process.hrtime.bigint() - t0) / 1e6);
  t0 = process.hrtime.bigint();
  const { mountFd } = await broker.mountImage(imageId);
  samples.MountImage.push(Number(process.hrtime.bigint() - t0) / 1e6);
  closeSync(mountFd);
}
await broker.removeImage(imageId);
broker.close();
process.stdout.write(JSON.stringify({ entries: list.length, addMs, samples }));
process.exit(0);
