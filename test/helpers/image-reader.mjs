// Runs AS A TEST USER: adds an image from a manifest file, uploads objects
// given as {digest: base64 content}, mounts it, attaches it in a new
// user+mount namespace of the user and runs a shell command there.
//   node image-reader.mjs SPEC.json   (SPEC: { manifest, objects, target, command })
import { closeSync, createWriteStream, readFileSync } from 'node:fs';
import { join } from 'node:path';

const pkg = process.env.MOUNTGATE_TEST_PKG;
const dist = (p) => import(join(pkg, 'dist', 'src', p));
const { connect } = await dist('index.js');
const { pipe, sealedMemfd } = await dist('sys/syscalls.js');
const { recordHeader } = await dist('client/images.js');
const { runInNamespace } = await dist('client/namespace.js');
const { lookupAccount } = await dist('accounts/load.js');
const { rootlessMap } = await dist('policy/idmap.js');

const spec = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const broker = await connect();
const fd = sealedMemfd('reader-manifest', Buffer.from(JSON.stringify(spec.manifest)));
const { imageId, missing } = await broker.addImage(fd);
closeSync(fd);
const [r, w] = pipe();
const put = broker.putObjects(r);
const ws = createWriteStream(null, { fd: w });
for (const d of missing) {
  const content = Buffer.from(spec.objects[d], 'base64');
  ws.write(recordHeader(d, content.length));
  ws.write(content);
}
ws.end();
await put;
closeSync(r);
const { mountFd } = await broker.mountImage(imageId, {});
broker.close();
const acct = lookupAccount(process.getuid());
process.exitCode = await runInNamespace({
  uidMap: rootlessMap(acct.uid, acct.subuids),
  gidMap: rootlessMap(acct.gid, acct.subgids),
  mounts: [{ fd: mountFd, target: spec.target }],
  command: ['sh', '-c', spec.command],
  interactive: false,
});
