// Broker memory: RSS summed over the broker's process tree (executor, front,
// its build workers and helpers) at rest, at its peak during and a few
// seconds after a 100k-object AddImage with its upload, and during and after
// a 1M-entry AddImage, each image removed again after. The bounds are the
// issue's: at most 100 MiB at rest, memory returned after (within 1.25x of
// rest, plus the database's page cache), a 1M-entry AddImage within the
// policy's bounds (its entries and manifest size) and one build worker's heap cap.
//   sudo bash bench/run.sh memory
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { defaultImageLimits } from '../src/policy/default.js';
import { createWorld } from '../test/helpers/world.js';
import { runAs } from '../test/helpers/run-as.js';
import { pkgRoot } from '../test/helpers/paths.js';
import { rssSampler, treeRss } from '../test/adversarial/helpers/broker-tree.js';
import { row, writeResult, type ResultTarget } from './lib/results.js';

const all = { users: ['*'] };
const MiB = 2 ** 20;
const world = await createWorld({
  users: { bench: {} },
  policy: {
    version: 1,
    methods: { AddImage: all, PutObjects: all, MountImage: all, ListImages: all, RemoveImage: all },
    limits: { concurrentRequests: 8, requestsPerMinute: 1_000_000 },
    images: { maxBytesPerUser: 2 ** 50 },
  },
});
const rest: ResultTarget = { target: 'Broker memory: at most 100 MiB at rest', limit: 100, unit: 'MiB', rows: [] };
const returned: ResultTarget = { target: 'Broker memory: returned after a big AddImage (RSS after / RSS at rest)', limit: 1.25, unit: 'ratio', rows: [] };
// One build's heap is capped at 2048 MiB (src/broker/image-builder.ts, sized for a manifest at the policy's largest).
const peaks: ResultTarget = { target: `Broker memory: peak during an AddImage of the policy's largest kind (maxEntriesPerImage ${defaultImageLimits.maxEntriesPerImage}, maxManifestBytes ${defaultImageLimits.maxManifestBytes / MiB} MiB) within one build's heap cap; peak RSS`, limit: 2048, unit: 'MiB', rows: [] };
try {
  const pid = world.broker.pid;
  await sleep(3000);
  const atRest = treeRss(pid) / MiB;
  rest.rows.push(row(rest, 'front + executor at rest, after start', atRest, null));
  console.log(`at rest: ${atRest.toFixed(1)} MiB`);
  for (const [label, entries, objects] of [['100k objects (110k entries), AddImage and upload', 110_000, 100_000], ['1M entries (16 objects), AddImage', 1_000_000, 16]] as const) {
    const sampler = rssSampler(pid, 50);
    const r = await runAs(world.users.bench!, [process.execPath, '--max-old-space-size=8192', join(pkgRoot, 'bench', 'mount-client.mjs'), String(entries), String(objects), '1', 'keep'], {
      busAddress: world.bus.address,
      env: { MOUNTGATE_TEST_PKG: pkgRoot },
      timeoutMs: 1_800_000,
    });
    const { peak } = sampler.stop();
    if (r.code !== 0) throw new Error(`bench client failed (${r.code}): ${r.stderr}`);
    const { imageId } = JSON.parse(r.stdout) as { imageId: string };
    // The spare upload helper (if any) is let go after 3 s; worker heaps shrink at their next collection.
    await sleep(5000);
    const after = treeRss(pid) / MiB;
    const rm = await runAs(world.users.bench!, [process.execPath, join(pkgRoot, 'bin', 'mountgate'), 'image', 'rm', imageId], { busAddress: world.bus.address });
    if (rm.code !== 0) throw new Error(`image rm failed: ${rm.stderr}`);
    await sleep(2000);
    const removed = treeRss(pid) / MiB;
    peaks.rows.push(row(peaks, label, peak / MiB, null));
    returned.rows.push(row(returned, `${label}: 5 s after`, after, atRest));
    returned.rows.push(row(returned, `${label}: after RemoveImage`, removed, atRest));
    console.log(`${label}: peak ${(peak / MiB).toFixed(1)} MiB, 5 s after ${after.toFixed(1)} MiB, after RemoveImage ${removed.toFixed(1)} MiB`);
  }
  const final = treeRss(pid) / MiB;
  rest.rows.push(row(rest, 'front + executor at rest, after both images', final, null));
  console.log(`at rest after: ${final.toFixed(1)} MiB`);
  console.log(`wrote ${writeResult({ bench: 'memory', targets: [rest, returned, peaks], series: [] })}`);
} finally {
  await world.teardown();
}
