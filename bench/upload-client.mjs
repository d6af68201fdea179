// Runs AS A TEST USER: registers the manifest in MANIFEST_FILE (JSON, with
// "sources": digest -> path) and uploads what the broker asks for, the files
// passed as fds (the default) or as bytes through a pipe; prints the times
// of AddImage and of the upload (ms) and what PutObjects accepted, as JSON.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const pkg = process.env.MOUNTGATE_TEST_PKG;
const { connect } = await import(join(pkg, 'dist', 'src', 'index.js'));
const { uploadImage } = await import(join(pkg, 'dist', 'src', 'client', 'images.js'));
const [file, transport] = [process.argv[2], process.argv[3] ?? 'files'];
const { manifest, sources } = JSON.parse(readFileSync(file, 'utf8'));
const broker = await connect();
const t0 = performance.now();
let added = t0;
let missing = 0;
const result = await uploadImage(broker, manifest, new Map(Object.entries(sources)), {
  transport,
  onAdded: (a) => {
    added = performance.now();
    missing = a.missing.length;
  },
});
const done = performance.now();
broker.close();
process.stdout.write(JSON.stringify({ imageId: result.imageId, addMs: added - t0, putMs: done - added, missing, uploaded: result.uploaded }));
process.exit(0);
