// Runs AS A TEST USER: AddImage of a manifest, then PutObjects over an
// AF_UNIX socket (or a pipe) whose records name passed fds of the kinds asked
// for. Prints one JSON line: {ok, name?, message?, objects?}.
//   node put-fds.mjs '{"manifest": {...}, "records": [{"digest", "size", "fd": SPEC | "none", "bytes"?: TEXT, "extra"?: SPEC (an fd sent with the bytes)}], "pipe"?: true}'
import { closeSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fdFactory } from './fd-factory.mjs';

const pkg = process.env.MOUNTGATE_TEST_PKG;
const require = createRequire(join(pkg, 'package.json'));
const { USocket } = require('usocket');
const { connect } = await import(join(pkg, 'dist', 'src', 'index.js'));
const { pipe, sealedMemfd, socketpair } = await import(join(pkg, 'dist', 'src', 'sys', 'syscalls.js'));
const { recordHeader } = await import(join(pkg, 'dist', 'src', 'client', 'images.js'));
const spec = JSON.parse(process.argv[2]);
const factory = fdFactory(pkg);
const broker = await connect();
const mfd = sealedMemfd('put-fds', Buffer.from(JSON.stringify(spec.manifest)));
const added = await broker.addImage(mfd);
closeSync(mfd);
const made = [];
const mk = (s) => {
  const m = factory.make(s);
  made.push(m);
  return m.fd;
};
let out;
try {
  const [readFd, writeFd] = spec.pipe ? pipe() : socketpair();
  const put = broker.putObjects(readFd);
  if (spec.pipe) {
    for (const r of spec.records) writeSync(writeFd, recordHeader(r.digest, r.size, r.fd !== undefined));
    closeSync(writeFd);
  } else {
    const socket = new USocket({ fd: writeFd });
    socket.on('data', () => undefined);
    socket.on('error', () => undefined);
    for (const r of spec.records) {
      const fds = r.fd && r.fd !== 'none' ? [mk(r.fd)] : r.extra ? [mk(r.extra)] : [];
      const data = r.bytes !== undefined ? Buffer.concat([recordHeader(r.digest, r.size), Buffer.from(r.bytes)]) : recordHeader(r.digest, r.size, true);
      await new Promise((res) => socket.write({ data, ...(fds.length ? { fds } : {}), callback: res }));
    }
    socket.end();
    put.finally(() => socket.destroy()).catch(() => undefined);
  }
  const r = await put;
  out = { ok: true, objects: r.objects, imageId: added.imageId };
  closeSync(readFd);
} catch (err) {
  out = { ok: false, name: String(err.name ?? '').replace(/^org\.mountgate\.Error\./, '').replace(/Error$/, ''), message: err.message, imageId: added.imageId };
}
for (const m of made) m.close();
const list = await broker.listImages();
out.missing = list.find((i) => i.id === added.imageId)?.missing;
await broker.removeImage(added.imageId);
broker.close();
process.stdout.write(`${JSON.stringify(out)}\n`);
process.exit(0);
