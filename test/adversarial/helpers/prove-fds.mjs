// Runs AS A TEST USER: ProveObjects over an AF_UNIX socket (or a pipe) whose
// records pass fds of the kinds asked for (or bytes), then, when asked, an
// AddImage of a manifest whose files take the digests the broker answered.
// Prints one JSON line: {ok, name?, message?, digests?, objects?, bytes?,
// imageId?, missing?}; the image it added is removed again unless "keep".
//   node prove-fds.mjs '{"records": [{"size", "fd": SPEC | "none", "bytes"?: TEXT, "digest"?: HEX}],
//     "pipe"?: true, "image"?: NAME, "keep"?: true, "second"?: true (a second ProveObjects while the first is open)}'
import { closeSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fdFactory } from './fd-factory.mjs';

const pkg = process.env.MOUNTGATE_TEST_PKG;
const require = createRequire(join(pkg, 'package.json'));
const { USocket } = require('usocket');
const { connect } = await import(join(pkg, 'dist', 'src', 'index.js'));
const { pipe, sealedMemfd, socketpair } = await import(join(pkg, 'dist', 'src', 'sys', 'syscalls.js'));
const { recordHeader, UNCLAIMED_DIGEST: zero } = await import(join(pkg, 'dist', 'src', 'client', 'images.js'));
const spec = JSON.parse(process.argv[2]);
const factory = fdFactory(pkg);
const broker = await connect();
const made = [];
const mk = (s) => {
  const m = factory.make(s);
  made.push(m);
  return m.fd;
};
const failure = (err) => ({ ok: false, name: String(err.name ?? '').replace(/^org\.mountgate\.Error\./, '').replace(/Error$/, ''), message: err.message });
let out;
try {
  const [readFd, writeFd] = spec.pipe ? pipe() : socketpair();
  const proved = broker.proveObjects(readFd);
  proved.catch(() => undefined);
  if (spec.pipe) {
    for (const r of spec.records) writeSync(writeFd, Buffer.concat([recordHeader(r.digest ?? zero, r.size, r.fd !== undefined), Buffer.from(r.bytes ?? '')]));
    closeSync(writeFd);
  } else {
    const socket = new USocket({ fd: writeFd });
    socket.on('data', () => undefined);
    socket.on('error', () => undefined);
    for (const r of spec.records) {
      const fds = r.fd && r.fd !== 'none' ? [mk(r.fd)] : [];
      const data = r.bytes !== undefined ? Buffer.concat([recordHeader(r.digest ?? zero, r.size), Buffer.from(r.bytes)]) : recordHeader(r.digest ?? zero, r.size, true);
      await new Promise((res) => socket.write({ data, ...(fds.length ? { fds } : {}), callback: res }));
    }
    if (spec.second) {
      // The first call is open (its stream not ended): a second one of the same user's meanwhile.
      const [r2, w2] = socketpair();
      closeSync(w2);
      out = { second: await broker.proveObjects(r2).then(() => ({ ok: true }), failure) };
      closeSync(r2);
    }
    socket.end();
    proved.finally(() => socket.destroy()).catch(() => undefined);
  }
  const r = await proved;
  out = { ...out, ok: true, digests: r.digests, objects: r.objects, bytes: r.bytes };
  closeSync(readFd);
} catch (err) {
  out = { ...out, ...failure(err) };
}
for (const m of made) m.close();
if (out.ok && spec.image) {
  const mtime = { sec: 1, nsec: 0 };
  const files = out.digests.map((digest, k) => ({ path: `/f${k}`, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size: spec.records[k].size, digest }));
  const manifest = { version: 1, name: spec.image, entries: [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime }, ...files] };
  const mfd = sealedMemfd('prove-fds', Buffer.from(JSON.stringify(manifest)));
  const added = await broker.addImage(mfd);
  closeSync(mfd);
  out.imageId = added.imageId;
  out.missing = added.missing.length;
  if (!spec.keep) await broker.removeImage(added.imageId);
}
broker.close();
process.stdout.write(`${JSON.stringify(out)}\n`);
process.exit(0);
