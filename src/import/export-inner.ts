// The reading half of `mountgate image export-layer`, run inside the
// caller's user+mount namespace where the image is mounted at MOUNT and the
// hidden image kept for it at KEPT ("-" when the layer needs nothing of it;
// there it may read every file, whoever owns it): writes the layer's tar
// stream to standard output, raw bytes from the split and contents from the
// mounts (by a path of the image that holds the content, else by digest in
// the kept image), and checks that the whole stream hashes to the layer's
// diff ID.
//   node export-inner.js SPLIT PATHS MOUNT KEPT DIFFID
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { keptPath } from './kept.js';
import { decodeSplit } from './tarsplit.js';

const [splitFile, pathsFile, mount, kept, diffId] = process.argv.slice(2) as [string, string, string, string, string];
const records = decodeSplit(readFileSync(splitFile));
const paths = JSON.parse(readFileSync(pathsFile, 'utf8')) as Record<string, string | { base64: string }>;
const hash = createHash('sha256');
const root = Buffer.from(mount);

async function out(bytes: Buffer): Promise<void> {
  hash.update(bytes);
  if (!process.stdout.write(bytes)) await new Promise<void>((resolve) => process.stdout.once('drain', () => resolve()));
}

function fail(message: string): never {
  process.stderr.write(`mountgate: ${message}\n`);
  process.exit(1);
}

/** Reads [offset, offset+length) of the open file in chunks, all of it or a failure. */
async function copy(fd: number, offset: number, length: number, what: string): Promise<void> {
  const buf = Buffer.allocUnsafe(1 << 20);
  for (let done = 0; done < length;) {
    const n = readSync(fd, buf, 0, Math.min(buf.length, length - done), offset + done);
    if (n === 0) fail(`${what} is shorter in the image than in the layer`);
    await out(buf.subarray(0, n));
    done += n;
  }
}

for (const r of records) {
  if ('raw' in r) {
    await out(r.raw);
    continue;
  }
  const f = r.file;
  if (!f.digest) continue;
  const p = paths[f.digest];
  if (p === undefined && kept === '-') fail(`no file of the image holds content ${f.digest}`);
  const rel = p === undefined ? Buffer.from(`/${keptPath(f.digest)}`) : typeof p === 'string' ? Buffer.from(p) : Buffer.from(p.base64, 'base64');
  const path = Buffer.concat([p === undefined ? Buffer.from(kept) : root, rel]);
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    fail(`content ${f.digest} of the layer cannot be read from ${p === undefined ? 'the hidden image kept for it' : 'the image'} (${(err as NodeJS.ErrnoException).code}): do not use a partial layer`);
  }
  try {
    if (f.sparse) for (const s of f.sparse) await copy(fd, s.offset, s.length, String(rel));
    else await copy(fd, 0, f.stored, String(rel));
  } finally {
    closeSync(fd);
  }
}
const got = `sha256:${hash.digest('hex')}`;
if (got !== diffId) fail(`the rebuilt layer hashes to ${got}, not its diff ID ${diffId}: do not use it`);
