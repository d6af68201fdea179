// Round-trip time of GetInfo and BindIdmapped (median over 1000 calls each),
// from an unprivileged user on a private bus with the production bus policy,
// against a baseline measured in the same run: the bus daemon's GetId. Then
// the price of helpers started on demand (src/broker/idle-pool.ts): the first
// BindIdmapped (an fd prober) and AddImage (a build helper) after the broker
// was idle long enough to let its helpers go, against the same calls warm
// (median of [cold] calls each).
//   sudo bash bench/run.sh rtt [calls] [cold]
import { join } from 'node:path';
import { createWorld } from '../test/helpers/world.js';
import { runAs } from '../test/helpers/run-as.js';
import { pkgRoot } from '../test/helpers/paths.js';
import { helperIdleMs } from '../src/broker/idle-pool.js';
import { row, writeResult, type ResultTarget } from './lib/results.js';

const calls = Number(process.argv[2] ?? 1000);
const cold = Number(process.argv[3] ?? 5);
const world = await createWorld({
  users: { bench: {} },
  policy: { version: 1, methods: { BindIdmapped: { users: ['*'] }, AddImage: { users: ['*'] }, RemoveImage: { users: ['*'] } }, limits: { concurrentRequests: 8, requestsPerMinute: 1_000_000 } },
});
try {
  const r = await runAs(world.users.bench!, [process.execPath, join(pkgRoot, 'bench', 'rtt-client.mjs'), String(calls), world.dirs.bench!, String(helperIdleMs + 1000), String(cold)], {
    busAddress: world.bus.address,
    env: { MOUNTGATE_TEST_PKG: pkgRoot },
    timeoutMs: 600_000,
  });
  if (r.code !== 0) throw new Error(`bench client failed: ${r.stderr}`);
  const samples = JSON.parse(r.stdout) as Record<string, number[]>;
  const q = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
  const base = q(samples.baseline!, 0.5);
  console.log(`round trips over ${calls} sequential calls each (ms); ratio = median / baseline median`);
  console.log('call            median      p90      p99    ratio');
  for (const [name, xs] of Object.entries(samples)) {
    console.log(`${name.padEnd(14)} ${q(xs, 0.5).toFixed(3).padStart(7)} ${q(xs, 0.9).toFixed(3).padStart(8)} ${q(xs, 0.99).toFixed(3).padStart(8)} ${(q(xs, 0.5) / base).toFixed(2).padStart(8)}`);
  }
  // No issue sets a limit for round trips: 5x guards against regressions (issue 2 measured 2.6-3.7x for GetInfo).
  const target: ResultTarget = { target: "broker round trip, median against the bus daemon's own GetId (a guard, no issue's target)", limit: 5, unit: 'ratio', rows: [] };
  for (const name of ['GetInfo', 'BindIdmapped']) target.rows.push(row(target, `${name}, ms (${calls} sequential calls)`, q(samples[name]!, 0.5), base));
  // No target either: what a helper's start adds to the first call after idle, shown so the trade against memory at rest is visible.
  const idle: ResultTarget = { target: `first call after ${(helperIdleMs + 1000) / 1000} s idle (helpers let go) against the same call warm: the price of helpers started on demand (no issue's target)`, limit: 100, unit: 'ratio', rows: [] };
  if (cold > 0) {
    idle.rows.push(row(idle, `BindIdmapped after idle (starts an fd prober), ms, median of ${cold}`, q(samples['BindIdmapped, after idle']!, 0.5), q(samples.BindIdmapped!, 0.5)));
    idle.rows.push(row(idle, `AddImage of 2 entries after idle (starts a build helper), ms, median of ${cold}`, q(samples['AddImage, after idle']!, 0.5), q(samples['AddImage, warm']!, 0.5)));
  }
  console.log(`wrote ${writeResult({ bench: 'rtt', targets: cold > 0 ? [target, idle] : [target], series: [] })}`);
} finally {
  await world.teardown();
}
