// How long one registration chunk holds the front's event loop: StoreDb.addRows
// of a new image's object rows, `per` rows a transaction, as register
// (src/store/images.ts) calls it, timed call by call on a scratch database.
// The image has `rows` objects: half new to the store, half named by the
// store's other images already (some proven by its first owner); a second
// owner joins half-way. With --base N the store holds N image_objects rows
// of other images first (built once, cached as a file in the scratch
// directory, copied for each run, so that runs of two commits start from the
// same bytes). The rows come in digest order, as the build helper hands
// them to the front (src/broker/image-builder.ts), or with --order file in
// the order of the files (what it did before: digests scattered over the key
// space, chunk after chunk). Prints ms per chunk, wall and CPU (median, p99, max, sum) and the total; no
// results file (not part of the suite).
//   node --import tsx bench/addrows.ts [--rows 100000] [--per 200] [--base 0] [--order digest|file] [--dir /tmp/mountgate-addrows] [--check]
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { StoreDb } from '../src/store/db.js';

const arg = (name: string, dflt: string) => {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? process.argv[at + 1]! : dflt;
};
const rows = Number(arg('rows', '100000'));
const per = Number(arg('per', '200'));
const base = Number(arg('base', '0'));
const dir = arg('dir', '/tmp/mountgate-addrows');
const order = arg('order', 'digest');
mkdirSync(dir, { recursive: true });

/** Object k's digest: spread over the key space as real digests are (so each chunk's rows land on pages all over the b-trees). */
const digest = (k: number) => createHash('sha256').update(`object ${k}`).digest('hex');
const hex = (n: number) => n.toString(16).padStart(64, '0');
const objectsOf = (from: number, count: number) => Object.fromEntries(Array.from({ length: count }, (_, k) => [digest(from + k), 4096 + ((from + k) % 1000)]));
/** Base image k names digests [k * 50k, k * 50k + 100k): each shares half with the next. */
const baseImage = (k: number) => ({ id: hex(1e12 + k), entries: 100_001, bytes: 0, imageBytes: 4096, objects: objectsOf(k * 50_000, 100_000) });
const baseImages = Math.ceil(base / 100_000);
/** The measured image: its first half is the last base image's second half (or, without a base, new too). */
const first = baseImages > 0 ? (baseImages - 1) * 50_000 + 50_000 : 0;

function baseStore(): string {
  const path = join(dir, `base-${base}.db`);
  if (base === 0 || existsSync(path)) return path;
  const building = `${path}.building`;
  rmSync(building, { force: true });
  const db = new StoreDb(building);
  const t0 = performance.now();
  for (let k = 0; k < baseImages; k++) {
    const image = baseImage(k);
    db.register(image, 1000 + (k % 3));
    db.markStored(image.id);
    // Uid 1000 has proven every other object of its images.
    if (k % 3 === 0) db.transaction(() => Object.keys(image.objects).forEach((d, j) => j % 2 === 0 && db.recordPossession(1000, d)));
  }
  db.close();
  renameSync(building, path);
  console.log(`base store: ${baseImages} images, ${baseImages * 100_000} rows, built in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return path;
}

const source = baseStore();
const path = join(dir, 'run.db');
for (const f of [path, `${path}-wal`, `${path}-shm`]) rmSync(f, { force: true });
if (base > 0) copyFileSync(source, path);
const db = new StoreDb(path);
const entries = Object.entries(objectsOf(first, rows));
const image = { id: hex(2e12), entries: rows + 1, bytes: 0, imageBytes: 4096, objects: entries.length };
if (order === 'digest') entries.sort((a, b) => (a[0] < b[0] ? -1 : 1));
db.begin(image, 1000);
const times: number[] = [];
/** CPU time of the process per chunk (user + system): on a shared machine, what the wall time is without the waits for a core. */
const cpu: number[] = [];
const t0 = performance.now();
for (let at = 0; at < entries.length; at += per) {
  if (at >= entries.length / 2 && at < entries.length / 2 + per) db.begin(image, 1001);
  const t = performance.now();
  const c = process.cpuUsage();
  if (!db.addRows(image.id, entries.slice(at, at + per))) throw new Error('addRows refused');
  const dc = process.cpuUsage(c);
  times.push(performance.now() - t);
  cpu.push((dc.user + dc.system) / 1000);
}
const total = performance.now() - t0;
db.markStored(image.id);
const summary = (ms: number[]) => {
  const s = [...ms].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)]!.toFixed(2);
  return `median ${q(0.5)} p99 ${q(0.99)} max ${q(1)} sum ${ms.reduce((a, b) => a + b, 0).toFixed(0)}`;
};
const missing = [1000, 1001].map((uid) => db.ownedBy(image.id, uid)!.missing);
console.log(`${rows} rows in ${order} order, ${per} per chunk, base ${base} rows: ${times.length} chunks, addRows total ${total.toFixed(0)} ms; missing ${missing.join('/')}`);
console.log(`  wall ms per chunk: ${summary(times)}`);
console.log(`  cpu ms per chunk:  ${summary(cpu)}`);
if (process.argv.includes('--check')) {
  const bad = db.check();
  console.log(bad.length === 0 ? 'check: consistent' : `check: ${bad.length} violations, first: ${bad[0]}`);
}
db.close();
for (const f of [path, `${path}-wal`]) rmSync(f, { force: true });
