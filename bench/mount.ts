// MountImage latency (call to usable mount fd) for images of 1k, 64k and 1M
// entries, from an unprivileged user, against GetInfo measured in the same
// run; then time to a usable root filesystem for the same tree: mountgate
// (MountImage) vs extracting a tar vs a hardlink checkout (cp -al).
//   sudo bash bench/run.sh mount [--sizes 1000,64000,1000000] [--calls 50]
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld } from '../test/helpers/world.js';
import { runAs } from '../test/helpers/run-as.js';
import { pkgRoot } from '../test/helpers/paths.js';
import { row, writeResult, type ResultTarget, type Series } from './lib/results.js';

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : dflt;
};
const sizes = arg('--sizes', '1000,64000,1000000').split(',').map(Number);
const calls = Number(arg('--calls', '50'));
const all = { users: ['*'] };
const q = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
const seconds = (fn: () => void) => {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
};

/** The same tree on disk: directories of 1000 files sharing 16 contents. */
function materialize(root: string, entries: number): void {
  const contents = Array.from({ length: 16 }, (_, k) => Buffer.alloc(8192 + k, 65 + k));
  let n = 1;
  for (let d = 0; n < entries; d++) {
    const dir = join(root, `d${String(d).padStart(5, '0')}`);
    mkdirSync(dir);
    n++;
    for (let f = 0; f < 1000 && n < entries; f++, n++) writeFileSync(join(dir, `f${String(f).padStart(4, '0')}`), contents[(d + f) % 16]!);
  }
}

const world = await createWorld({
  users: { bench: {} },
  policy: {
    version: 1,
    methods: { AddImage: all, PutObjects: all, MountImage: all, ListImages: all, RemoveImage: all },
    limits: { concurrentRequests: 8, requestsPerMinute: 1_000_000 },
    images: { maxEntriesPerImage: 2_000_000, maxBytesPerUser: 2 ** 50 },
  },
});
// The target's reference (the raw kernel steps done in-process by a script) is not measured here yet.
const target: ResultTarget = { target: 'MountImage: O(1) in entries and objects; at most 3x the raw kernel steps done in-process by a script in the same run', limit: 3, unit: 'ratio', rows: [] };
const latency: Series = { title: 'MountImage time against entries', x: 'entries', y: 'ms (median)', lines: [{ name: 'mountgate', points: [] }, { name: 'GetInfo (a bus round trip)', points: [] }] };
const rootfs: Series = { title: 'Time to a usable root filesystem against entries', x: 'entries', y: 's', lines: [{ name: 'mountgate (MountImage)', points: [] }, { name: 'tar -x', points: [] }, { name: 'cp -al', points: [] }] };
try {
  console.log(`MountImage: call to usable mount fd, ${calls} calls each; baseline = GetInfo in the same run`);
  console.log('entries    AddImage(s)  mount median  p90 (ms)  GetInfo median  ratio');
  for (const entries of sizes) {
    const r = await runAs(world.users.bench!, [process.execPath, '--max-old-space-size=8192', join(pkgRoot, 'bench', 'mount-client.mjs'), String(entries), String(calls)], {
      busAddress: world.bus.address,
      env: { MOUNTGATE_TEST_PKG: pkgRoot },
      timeoutMs: 1_800_000,
    });
    if (r.code !== 0) throw new Error(`bench client failed (${r.code}): ${r.stderr}`);
    const out = JSON.parse(r.stdout) as { entries: number; addMs: number; samples: Record<string, number[]> };
    const m = out.samples.MountImage!;
    const g = out.samples.GetInfo!;
    target.rows.push(row(target, `${out.entries} entries, 16 objects, ms`, q(m, 0.5), null));
    latency.lines[0]!.points.push([out.entries, q(m, 0.5)]);
    latency.lines[1]!.points.push([out.entries, q(g, 0.5)]);
    console.log(`${String(out.entries).padEnd(10)} ${(out.addMs / 1000).toFixed(2).padStart(10)}  ${q(m, 0.5).toFixed(2).padStart(12)} ${q(m, 0.9).toFixed(2).padStart(9)} ${q(g, 0.5).toFixed(2).padStart(15)} ${(q(m, 0.5) / q(g, 0.5)).toFixed(1).padStart(6)}`);
  }

  console.log('\nTime to a usable root filesystem (s), same tree; tar and cp -al prepared beforehand, page cache warm');
  console.log('entries    mountgate  tar -x   cp -al');
  for (const entries of sizes) {
    const scratch = mkdtempSync('/var/tmp/mountgate-bench.');
    try {
      const src = join(scratch, 'tree');
      mkdirSync(src);
      materialize(src, entries);
      execFileSync('tar', ['-cf', join(scratch, 'tree.tar'), '-C', src, '.']);
      const tarDest = join(scratch, 'tar');
      mkdirSync(tarDest);
      const tar = seconds(() => execFileSync('tar', ['-xf', join(scratch, 'tree.tar'), '-C', tarDest]));
      const cp = seconds(() => execFileSync('cp', ['-al', src, join(scratch, 'cp')]));
      const r = await runAs(world.users.bench!, [process.execPath, '--max-old-space-size=8192', join(pkgRoot, 'bench', 'mount-client.mjs'), String(entries), '5'], {
        busAddress: world.bus.address,
        env: { MOUNTGATE_TEST_PKG: pkgRoot },
        timeoutMs: 1_800_000,
      });
      const mg = q((JSON.parse(r.stdout) as { samples: Record<string, number[]> }).samples.MountImage!, 0.5) / 1000;
      for (const [k, v] of [mg, tar, cp].entries()) rootfs.lines[k]!.points.push([entries, v]);
      console.log(`${String(entries).padEnd(10)} ${mg.toFixed(4).padStart(9)} ${tar.toFixed(3).padStart(7)} ${cp.toFixed(3).padStart(8)}`);
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  }
  console.log('(mountgate: MountImage of an image already registered and uploaded; registering it is AddImage above)');
  console.log('reference skipped: the raw kernel steps are not measured by this bench yet');
  console.log(`wrote ${writeResult({ bench: 'mount', targets: [target], series: [latency, rootfs] })}`);
} finally {
  await world.teardown();
}
