// Runs AS A TEST USER: registers the manifest in MANIFEST_FILE (JSON, with
// "sources": digest -> path) and uploads what the broker asks for, the files
// passed as fds (the default) or as bytes through a pipe; prints the times
// of AddImage and of the upload (ms) and what PutObjects accepted, as JSON.
// With "prove", the way `image add DIR` goes: ProveObjects of every source
// file first (queued on a Prover, client/prover.ts) (the broker hashes them; the client uses the digests it
// answers), then AddImage, which should find nothing missing ("putMs" is
// then the ProveObjects call, "proved" what it held).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const pkg = process.env.MOUNTGATE_TEST_PKG;
const { connect } = await import(join(pkg, 'dist', 'src', 'index.js'));
const { uploadImage } = await import(join(pkg, 'dist', 'src', 'client', 'images.js'));
const { Prover } = await import(join(pkg, 'dist', 'src', 'client', 'prover.js'));
const [file, transport] = [process.argv[2], process.argv[3] ?? 'files'];
const { manifest, sources } = JSON.parse(readFileSync(file, 'utf8'));
const broker = await connect();
let missing = 0;
if (transport === 'prove') {
  const sizes = new Map(manifest.entries.filter((e) => e.type === 'file' && e.digest).map((e) => [e.digest, e.size]));
  const files = Object.entries(sources).map(([digest, path]) => ({ digest, path, size: sizes.get(digest) }));
  const p0 = performance.now();
  const prover = new Prover(broker);
  for (const f of files) await prover.addFile(f.path, f.size);
  const digests = await prover.finish();
  const p1 = performance.now();
  const wrong = files.filter((f, k) => digests[k] !== f.digest).length;
  if (wrong > 0) throw new Error(`ProveObjects answered ${wrong} digest(s) other than the manifest's`);
  const result = await uploadImage(broker, manifest, new Map(Object.entries(sources)), { onAdded: (a) => (missing = a.missing.length) });
  const p2 = performance.now();
  broker.close();
  process.stdout.write(JSON.stringify({ imageId: result.imageId, addMs: p2 - p1, putMs: p1 - p0, missing, proved: files.length, uploaded: result.uploaded }));
  process.exit(0);
}
const t0 = performance.now();
let added = t0;
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
