// Broker memory, over the broker's whole process tree (executor, front, and
// whichever helpers run: fd probers, build and upload helpers) at rest, at
// its peak during and a few seconds after a 100k-object AddImage with its
// upload, and during and after a 1M-entry AddImage, each image removed again
// after. The bounds are the issue's: at most 100 MiB at rest, memory returned
// after (within 1.25x of rest), a 1M-entry AddImage within the policy's
// bounds (its entries and manifest size) and one build's heap cap.
//
// Three measures of the same tree, each a row:
// - PSS summed (/proc/PID/smaps_rollup), the target figure: a page shared by
//   N processes counts 1/N in each. Pages shared with processes outside the
//   broker (other Node programs on the machine map node's text too) are
//   divided among those as well, so on a busy machine PSS reads low;
// - resident pages counted once (/proc/PID/pagemap): every physical page
//   any process of the tree maps, once, whoever else maps it. This is what
//   the tree holds resident, shared pages once, independent of the machine;
// - RSS summed: a page shared by two processes counts twice (the figure the
//   bench reported before; the front and the executor share node's text).
// Each figure is the median of --runs fresh brokers (default 3); the
// per-kind split (PSS and RSS per kind of process) is printed for each.
//   sudo bash bench/run.sh memory [--runs N]
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { buildHeapMb } from '../src/broker/node-flags.js';
import { defaultImageLimits } from '../src/policy/default.js';
import { createWorld } from '../test/helpers/world.js';
import { runAs } from '../test/helpers/run-as.js';
import { pkgRoot } from '../test/helpers/paths.js';
import { rssSampler, showTreeMemory, treeMemory, treeUniqueResident } from '../test/adversarial/helpers/broker-tree.js';
import { median, row, writeResult, type ResultTarget } from './lib/results.js';

const all = { users: ['*'] };
const MiB = 2 ** 20;
const runsAt = process.argv.indexOf('--runs');
const runs = runsAt >= 0 ? Number(process.argv[runsAt + 1]) : 3;

type Measures = { pss: number; unique: number; rss: number };
const measureNames: Record<keyof Measures, string> = {
  pss: 'PSS summed (target figure)',
  unique: 'resident pages counted once',
  rss: 'RSS summed (shared pages counted per process)',
};

function measure(pid: number, label: string): Measures {
  const m = treeMemory(pid);
  const unique = treeUniqueResident(pid);
  console.log(`  ${label}: ${showTreeMemory(m)}; resident pages once ${(unique / MiB).toFixed(1)} MiB`);
  return { pss: m.pss / MiB, unique: unique / MiB, rss: m.rss / MiB };
}

const cases = [['100k objects (110k entries), AddImage and upload', 110_000, 100_000], ['1M entries (16 objects), AddImage', 1_000_000, 16]] as const;

interface Run {
  rest: Measures;
  final: Measures;
  images: { after: Measures; removed: Measures; peak: number }[];
}

async function oneRun(k: number): Promise<Run> {
  console.log(`run ${k + 1} of ${runs}`);
  const world = await createWorld({
    users: { bench: {} },
    policy: {
      version: 1,
      methods: { AddImage: all, PutObjects: all, MountImage: all, ListImages: all, RemoveImage: all },
      limits: { concurrentRequests: 8, requestsPerMinute: 1_000_000 },
      images: { maxBytesPerUser: 2 ** 50 },
    },
  });
  try {
    const pid = world.broker.pid;
    await sleep(3000);
    const rest = measure(pid, 'at rest');
    const images: Run['images'] = [];
    for (const [label, entries, objects] of cases) {
      const sampler = rssSampler(pid, 50);
      const r = await runAs(world.users.bench!, [process.execPath, '--max-old-space-size=8192', join(pkgRoot, 'bench', 'mount-client.mjs'), String(entries), String(objects), '1', 'keep'], {
        busAddress: world.bus.address,
        env: { MOUNTGATE_TEST_PKG: pkgRoot },
        timeoutMs: 1_800_000,
      });
      const { peak } = sampler.stop();
      if (r.code !== 0) throw new Error(`bench client failed (${r.code}): ${r.stderr}`);
      const { imageId } = JSON.parse(r.stdout) as { imageId: string };
      console.log(`  ${label}: peak RSS ${(peak / MiB).toFixed(1)} MiB`);
      // Idle helpers are let go 5 s after their last use (src/broker/idle-pool.ts), a big build's at once.
      await sleep(5000);
      const after = measure(pid, `${label}, 5 s after`);
      // RemoveImage answers at once; the files go after (the front's `store` audit line says when).
      const earlier = new Set(world.broker.audit.filter((l) => l.event === 'store'));
      const rmStart = Date.now();
      const rm = await runAs(world.users.bench!, [process.execPath, join(pkgRoot, 'bin', 'mountgate'), 'image', 'rm', imageId], { busAddress: world.bus.address, timeoutMs: 900_000 });
      if (rm.code !== 0) throw new Error(`image rm failed (${rm.code ?? rm.signal}): ${rm.stderr}`);
      console.log(`  ${label}: RemoveImage took ${((Date.now() - rmStart) / 1000).toFixed(1)} s`);
      await world.broker.waitFor((l) => l.event === 'store' && !earlier.has(l), 900_000);
      console.log(`  ${label}: its rows and files all gone after ${((Date.now() - rmStart) / 1000).toFixed(1)} s`);
      await sleep(2000);
      const removed = measure(pid, `${label}, after RemoveImage`);
      images.push({ after, removed, peak: peak / MiB });
    }
    const final = measure(pid, 'at rest after both images');
    return { rest, final, images };
  } finally {
    await world.teardown();
  }
}

const done: Run[] = [];
for (let k = 0; k < runs; k++) done.push(await oneRun(k));
const med = (pick: (r: Run) => number) => median(done.map(pick));

const rest: ResultTarget = { target: 'Broker memory: at most 100 MiB at rest (PSS summed over the tree is the target figure)', limit: 100, unit: 'MiB', rows: [] };
const returned: ResultTarget = { target: 'Broker memory: returned after a big AddImage (figure after / the same figure at rest)', limit: 1.25, unit: 'ratio', rows: [] };
const peaks: ResultTarget = {
  target: `Broker memory: peak during an AddImage of the policy's largest kind (maxEntriesPerImage ${defaultImageLimits.maxEntriesPerImage}, maxManifestBytes ${defaultImageLimits.maxManifestBytes / MiB} MiB) within one build's heap cap (${buildHeapMb} MiB); peak RSS summed`,
  limit: buildHeapMb,
  unit: 'MiB',
  rows: [],
};
for (const key of Object.keys(measureNames) as (keyof Measures)[]) {
  rest.rows.push(row(rest, `front + executor + helpers at rest, after start: ${measureNames[key]}`, med((r) => r.rest[key]), null));
  rest.rows.push(row(rest, `front + executor + helpers at rest, after both images: ${measureNames[key]}`, med((r) => r.final[key]), null));
}
cases.forEach(([label], i) => {
  for (const key of Object.keys(measureNames) as (keyof Measures)[]) {
    returned.rows.push(row(returned, `${label}: 5 s after, ${measureNames[key]}`, med((r) => r.images[i]!.after[key]), med((r) => r.rest[key])));
    returned.rows.push(row(returned, `${label}: after RemoveImage, ${measureNames[key]}`, med((r) => r.images[i]!.removed[key]), med((r) => r.rest[key])));
  }
  peaks.rows.push(row(peaks, label, med((r) => r.images[i]!.peak), null));
});
for (const t of [rest, returned, peaks]) {
  console.log(t.target);
  for (const r of t.rows) console.log(`  ${r.pass ? 'pass' : 'FAIL'} ${r.case}: ${r.mountgate.toFixed(1)}${r.ratio === null ? '' : ` (x${r.ratio.toFixed(2)})`}`);
}
console.log(`wrote ${writeResult({ bench: 'memory', targets: [rest, returned, peaks], series: [] })}`);
