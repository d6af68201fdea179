// Times the composefs image writer and the manifest path in front of it, on
// the cs9-x86_64-minimal conformance asset (22,010 entries, a real CentOS
// Stream 9 tree) and on synthetic manifests of 64,000 and 1,000,000 entries.
// Each input runs in its own process, so its peak RSS is its own. Per input:
// median (min-max) of several runs of
//   dump -> manifest  manifestFromDumpText (cs9 only; includes validation),
//   validation        validateManifest: JSON Schema and the semantic checks,
//   writer            writeImage: its own checks, prepareTree, measure, emit,
// and, as a baseline measured in the same process, a JSON round trip of the
// manifest (JSON.parse(JSON.stringify(m))): native code touching every entry
// once and building the same objects, the floor for any JS consumer of a
// manifest. sha256 of the image is shown too (pure data movement over the output).
// Run: npx tsx bench/writer.ts [--runs N] [--big-runs N] [--entries N]
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { manifestFromDumpText } from '../src/composefs/convert.js';
import { writeImage } from '../src/composefs/writer.js';
import { validateManifest } from '../src/manifest/load.js';
import type { Entry, Manifest } from '../src/schema/types.generated.js';

const script = fileURLToPath(import.meta.url);
const root = resolve(dirname(script), '..');
const asset = resolve(root, '../shared/conformance/composefs-assets/cs9-x86_64-minimal.dump.gz');

function argument(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const runs = argument('--runs', 9);
const bigRuns = argument('--big-runs', 3);
const bigCount = argument('--entries', 1_000_000);

interface Timing {
  median: number;
  min: number;
  max: number;
}

interface CaseResult {
  name: string;
  entries: number;
  imageBytes: number;
  imageSha256: string;
  dumpToManifest: Timing | null;
  validation: Timing;
  writer: Timing;
  jsonRoundTrip: Timing;
  sha256: Timing;
  /** RSS with the manifest loaded, before any writing. */
  rssManifest: number;
  /** Peak RSS of the process up to the end of the writer runs. */
  rssPeak: number;
}

function time(n: number, f: () => void): Timing {
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    f();
    ms.push(performance.now() - t0);
  }
  ms.sort((a, b) => a - b);
  return { median: ms[Math.floor(ms.length / 2)]!, min: ms[0]!, max: ms[ms.length - 1]! };
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

/** One input, in this process. */
function runCase(name: string): CaseResult {
  let manifest: Manifest;
  let dumpToManifest: Timing | null = null;
  let n: number;
  if (name === 'cs9') {
    n = runs;
    const dump = gunzipSync(readFileSync(asset));
    manifest = manifestFromDumpText(dump); // also warms up
    dumpToManifest = time(n, () => manifestFromDumpText(dump));
  } else {
    const count = Number(name.replace('synthetic-', ''));
    n = count > 100_000 ? bigRuns : runs;
    manifest = syntheticManifest(count);
  }
  global.gc?.();
  const rssManifest = process.memoryUsage().rss;
  let image = writeImage(manifest); // warm-up, and the image to hash
  const imageSha256 = createHash('sha256').update(image).digest('hex');
  const imageBytes = image.length;
  image = Buffer.alloc(0);
  const writer = time(n, () => writeImage(manifest));
  const rssPeak = process.resourceUsage().maxRSS * 1024; // before the baseline copies the manifest
  const validation = time(n, () => validateManifest(manifest));
  const jsonRoundTrip = time(n, () => JSON.parse(JSON.stringify(manifest)));
  const written = writeImage(manifest);
  const sha256 = time(n, () => createHash('sha256').update(written).digest());
  return {
    name, entries: manifest.entries.length, imageBytes, imageSha256, dumpToManifest, validation, writer, jsonRoundTrip, sha256,
    rssManifest, rssPeak,
  };
}

const caseIndex = process.argv.indexOf('--case');
if (caseIndex >= 0) {
  process.stdout.write(JSON.stringify(runCase(process.argv[caseIndex + 1]!)) + '\n');
} else {
  const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
  const ms = (t: Timing) => `${t.median.toFixed(1)} ms (${t.min.toFixed(1)}-${t.max.toFixed(1)})`;
  const passOn = process.argv.slice(2);
  for (const name of ['cs9', 'synthetic-64000', `synthetic-${bigCount}`]) {
    // A fresh process per input, with the same loader flags (tsx) as this one.
    const out = execFileSync(process.execPath, [...process.execArgv, script, ...passOn, '--case', name], { encoding: 'utf8', maxBuffer: 1 << 20 });
    const r = JSON.parse(out.trim().split('\n').pop()!) as CaseResult;
    const perSecond = Math.round(r.entries / (r.writer.median / 1000)).toLocaleString('en-US');
    console.log(`${r.name}: ${r.entries.toLocaleString('en-US')} entries, image ${mib(r.imageBytes)} (sha256 ${r.imageSha256.slice(0, 16)}...)`);
    if (r.dumpToManifest) console.log(`  dump -> manifest  ${ms(r.dumpToManifest)}  (includes validation)`);
    console.log(`  validation        ${ms(r.validation)}`);
    console.log(`  writer            ${ms(r.writer)}  ${perSecond} entries/s`);
    console.log(`  baseline: JSON round trip ${ms(r.jsonRoundTrip)} -> writer = ${(r.writer.median / r.jsonRoundTrip.median).toFixed(2)}x; sha256 of the image ${ms(r.sha256)}`);
    console.log(`  RSS with the manifest loaded ${mib(r.rssManifest)}, peak ${mib(r.rssPeak)}`);
  }
}
