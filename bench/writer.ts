// Times the composefs image writer: on the cs9-x86_64-minimal conformance
// asset (22,010 entries, a real CentOS Stream 9 tree) and on a synthetic
// manifest of 1,000,000 entries. Prints the median of several runs, entries
// per second and memory. Run: npx tsx bench/writer.ts [--runs N] [--entries N]
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import { manifestFromDumpText } from '../src/composefs/convert.js';
import { writeImage } from '../src/composefs/writer.js';
import type { Entry, Manifest } from '../src/schema/types.generated.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const asset = resolve(root, '../shared/conformance/composefs-assets/cs9-x86_64-minimal.dump.gz');

function argument(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

function time(label: string, manifest: Manifest, runs: number): void {
  const times: number[] = [];
  let size = 0;
  let peakRss = process.memoryUsage().rss;
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const image = writeImage(manifest);
    times.push(performance.now() - t0);
    size = image.length;
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
  }
  const ms = median(times);
  const n = manifest.entries.length;
  console.log(
    `${label}: ${n} entries, image ${mib(size)}; median of ${runs}: ${ms.toFixed(0)} ms ` +
      `(min ${Math.min(...times).toFixed(0)}, max ${Math.max(...times).toFixed(0)}), ` +
      `${Math.round(n / (ms / 1000)).toLocaleString('en-US')} entries/s; peak RSS ${mib(peakRss)}`,
  );
}

/** A tree shaped like a distribution: 1 root, directories of 100 entries, files with digests, some xattrs. */
function syntheticManifest(count: number): Manifest {
  const mtime = { sec: 1700000000, nsec: 0 };
  const entries: Entry[] = [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime }];
  const selinux = Buffer.from('system_u:object_r:usr_t:s0\0').toString('base64');
  const dirs = Math.ceil((count - 1) / 101);
  for (let d = 0; d < dirs && entries.length < count; d++) {
    const dir = `/d${String(d).padStart(6, '0')}`;
    entries.push({ path: dir, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime, xattrs: [{ key: 'security.selinux', value: selinux }] });
    for (let f = 0; f < 100 && entries.length < count; f++) {
      const path = `${dir}/file-${String(f).padStart(3, '0')}`;
      const digest = createHash('sha256').update(path).digest('hex');
      if (f % 10 === 9) entries.push({ path, type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime, target: `file-${f - 1}` });
      else entries.push({ path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size: 1000 + f * 37, digest, backing: `${digest.slice(0, 2)}/${digest.slice(2)}`, xattrs: [{ key: 'security.selinux', value: selinux }] });
    }
  }
  return { version: 1, entries };
}

const runs = argument('--runs', 7);
const bigRuns = argument('--big-runs', 3);
const bigCount = argument('--entries', 1_000_000);

const cs9 = manifestFromDumpText(gunzipSync(readFileSync(asset)));
writeImage(cs9); // warm up
time('cs9-x86_64-minimal', cs9, runs);

const t0 = performance.now();
const big = syntheticManifest(bigCount);
console.log(`(synthetic manifest of ${big.entries.length} entries generated in ${(performance.now() - t0).toFixed(0)} ms)`);
time('synthetic', big, bigRuns);
