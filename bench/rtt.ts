// Round-trip time of GetInfo and BindIdmapped (median over 1000 calls each),
// from an unprivileged user on a private bus with the production bus policy,
// against a baseline measured in the same run: the bus daemon's GetId.
//   sudo bash bench/run.sh rtt [calls]
import { join } from 'node:path';
import { createWorld } from '../test/helpers/world.js';
import { runAs } from '../test/helpers/run-as.js';
import { pkgRoot } from '../test/helpers/paths.js';
import { row, writeResult, type ResultTarget } from './lib/results.js';

const calls = Number(process.argv[2] ?? 1000);
const world = await createWorld({
  users: { bench: {} },
  policy: { version: 1, methods: { BindIdmapped: { users: ['*'] } }, limits: { concurrentRequests: 8, requestsPerMinute: 1_000_000 } },
});
try {
  const r = await runAs(world.users.bench!, [process.execPath, join(pkgRoot, 'bench', 'rtt-client.mjs'), String(calls), world.dirs.bench!], {
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
  console.log(`wrote ${writeResult({ bench: 'rtt', targets: [target], series: [] })}`);
} finally {
  await world.teardown();
}
