// Whether one user's big calls stall everyone else: a second user calls
// GetInfo back to back at rest, then while the first user adds a
// 100k-object image (AddImage), uploads its objects (PutObjects) and
// removes it (RemoveImage), until every object file of it is gone from the
// store (the removal's deletions may outlive its answer). The figures are
// the second user's GetInfo latency during each call (p50, p99, max, from
// the front's audit line of the call's decision to its answer) against the
// same at rest, in the same run, on the same broker.
//   sudo bash bench/run.sh remove [--objects N]
import { readdirSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { createWorld } from '../test/helpers/world.js';
import { runAs } from '../test/helpers/run-as.js';
import { pkgRoot } from '../test/helpers/paths.js';
import { row, writeResult, type ResultTarget } from './lib/results.js';

const all = { users: ['*'] };
const objectsAt = process.argv.indexOf('--objects');
const objects = objectsAt >= 0 ? Number(process.argv[objectsAt + 1]) : 100_000;

/** The q-quantile of samples (nearest rank). */
function quantile(samples: number[], q: number): number {
  const s = [...samples].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}

/** Object files in the store (what the removal still has to delete). */
function objectFiles(objectsDir: string): number {
  let n = 0;
  for (const prefix of readdirSync(objectsDir)) n += readdirSync(join(objectsDir, prefix)).length;
  return n;
}

const world = await createWorld({
  users: { bench: {}, other: {} },
  policy: {
    version: 1,
    methods: { AddImage: all, PutObjects: all, MountImage: all, ListImages: all, RemoveImage: all },
    limits: { concurrentRequests: 8, requestsPerMinute: 1_000_000 },
    images: { maxBytesPerUser: 2 ** 50 },
  },
});
/** The calls' windows on the front's clock, to say which one each of its worst stalls fell in. */
const phases: [string, number, number][] = [];
try {
  const objectsDir = join(world.broker.stateDir, 'store', 'objects');
  const stopFile = join(world.scratch, 'stop');
  const sampler = runAs(world.users.other!, [process.execPath, join(pkgRoot, 'bench', 'stall-client.mjs'), stopFile], { busAddress: world.bus.address, env: { MOUNTGATE_TEST_PKG: pkgRoot }, timeoutMs: 1_800_000 });
  await sleep(4000);
  const addStart = Date.now();
  const add = await runAs(world.users.bench!, [process.execPath, join(pkgRoot, 'bench', 'mount-client.mjs'), String(objects + objects / 10), String(objects), '0', 'keep'], {
    busAddress: world.bus.address,
    env: { MOUNTGATE_TEST_PKG: pkgRoot },
    timeoutMs: 1_800_000,
  });
  if (add.code !== 0) throw new Error(`bench client failed (${add.code}): ${add.stderr}`);
  const { imageId, addMs, putMs } = JSON.parse(add.stdout) as { imageId: string; addMs: number; putMs: number };
  console.log(`${objects} objects registered (AddImage ${(addMs / 1000).toFixed(1)} s) and uploaded (PutObjects ${(putMs / 1000).toFixed(1)} s); ${objectFiles(objectsDir)} object files in the store`);
  // Idle helpers are let go 5 s after their last use.
  await sleep(6000);
  const rmStart = Date.now();
  const rm = await runAs(world.users.bench!, [process.execPath, join(pkgRoot, 'bin', 'mountgate'), 'image', 'rm', imageId], { busAddress: world.bus.address, timeoutMs: 900_000 });
  if (rm.code !== 0) throw new Error(`image rm failed (${rm.code ?? rm.signal}): ${rm.stderr}`);
  const answered = Date.now();
  while (objectFiles(objectsDir) > 0) await sleep(200);
  // The front's own times: the removal's decision (its call arrived), and the report that its deletions are done (when they outlive the answer).
  const stamp = (pred: (l: Record<string, unknown>) => boolean) => {
    const line = world.broker.audit.find(pred);
    return line ? Date.parse(line.time as string) : undefined;
  };
  const called = stamp((l) => l.method === 'RemoveImage' && l.event === 'decision') ?? rmStart;
  const drained = Math.max(answered, stamp((l) => l.event === 'store') ?? answered);
  console.log(`RemoveImage answered ${((answered - called) / 1000).toFixed(1)} s after the front got it; its object files were all gone ${((drained - called) / 1000).toFixed(1)} s after`);
  await sleep(500);
  writeFileSync(stopFile, '');
  const s = await sampler;
  if (s.code !== 0) throw new Error(`GetInfo client failed (${s.code ?? s.signal}): ${s.stderr}`);
  const samples = (JSON.parse(s.stdout) as { samples: [number, number][] }).samples;
  const rest = samples.filter(([t, ms]) => t + ms < addStart).map(([, ms]) => ms);
  /** The front's window of bench's call `method`: from its decision to its answer. */
  const window = (method: string): [number, number] => {
    const decided = stamp((l) => l.method === method && l.event === 'decision' && (l.caller as { uid: number } | undefined)?.uid === world.users.bench!.uid);
    const result = stamp((l) => l.method === method && l.event === 'result' && (l.caller as { uid: number } | undefined)?.uid === world.users.bench!.uid);
    if (decided === undefined || result === undefined) throw new Error(`no audit lines of ${method}`);
    return [decided, result];
  };
  const windows: [string, [number, number]][] = [['AddImage', window('AddImage')], ['PutObjects', window('PutObjects')], ['RemoveImage', [called, drained]]];
  // Before AddImage's decision: the client's manifest, the build, and the front reading the build's result.
  phases.push(['AddImage before its decision', addStart, windows[0]![1][0]], ...windows.map(([m, w]): [string, number, number] => [m, w[0], w[1]]));
  const during = ([from, to]: [number, number]) => samples.filter(([t, ms]) => t + ms >= from && t <= to).map(([, ms]) => ms);
  console.log(`GetInfo calls: ${rest.length} at rest, ${windows.map(([m, w]) => `${during(w).length} during ${m} (${((w[1] - w[0]) / 1000).toFixed(1)} s)`).join(', ')}`);
  const targets: ResultTarget[] = [];
  for (const [method, w] of windows) {
    const target: ResultTarget = {
      target: `Another user's GetInfo stays answered during one user's ${method} of a ${objects / 1000}k-object image (its latency during the call${method === 'RemoveImage' ? ' and its deletions' : ''} / at rest, same run)`,
      limit: 5,
      unit: 'ratio',
      rows: [],
    };
    const d = during(w);
    for (const [name, q] of [['p50', 0.5], ['p99', 0.99], ['max', 1]] as const) {
      target.rows.push(row(target, `GetInfo ${name} (ms) during ${method} of ${objects} objects, against at rest`, quantile(d, q), quantile(rest, q)));
    }
    for (const r of target.rows) console.log(`  ${r.pass ? 'pass' : 'FAIL'} ${r.case}: ${r.mountgate.toFixed(2)} against ${r.reference!.toFixed(2)} (x${r.ratio!.toFixed(1)})`);
    targets.push(target);
  }
  console.log(`wrote ${writeResult({ bench: 'remove', targets, series: [] })}`);
} finally {
  await world.teardown();
  // The front's own account of its event loop (its stop line): the worst stalls, to line up with the removal.
  const stop = world.broker.audit.find((l) => l.event === 'stop' && l.process === undefined && l.eventLoopDelayMs);
  if (stop) {
    const stalls = stop.stalls as { at: string; ms: number }[];
    // A stall is reported when it ends: it overlaps a window that ends after its start and starts before its end.
    const during = (s: { at: string; ms: number }) => phases.find(([, from, to]) => Date.parse(s.at) - s.ms <= to && Date.parse(s.at) >= from)?.[0] ?? 'outside the calls';
    console.log(`front event loop: ${JSON.stringify(stop.eventLoopDelayMs)}; worst stalls ${stalls.map((s) => `${s.ms} ms at ${s.at} (${during(s)})`).join(', ')}`);
  }
}
