// MountImage latency (call to usable mount fd) from an unprivileged user, for
// images of 1k, 100k and 1M entries (16 objects) and of 5k and 100k objects,
// against the raw kernel steps of the same mount done in-process by this
// script as root in the same run (fsopen/fsconfig/fsmount of the broker's
// EROFS file, mount_setattr with the same idmap, the overlay over it with the
// store as data-only layer: what the executor does, without bus, front or
// executor in between); GetInfo shows the bus round trip's share. Then time
// to a usable root filesystem for the same tree: mountgate (MountImage) vs
// extracting a tar vs a hardlink checkout (cp -al).
//   sudo bash bench/run.sh mount [--cases 1000x16,100000x16,...] [--calls 50] [--rootfs-sizes 1000,100000,1000000]
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { IdRange } from '../src/schema/types.generated.js';
import * as sys from '../src/sys/syscalls.js';
import { UserNamespaceCache } from '../src/sys/userns.js';
import { createWorld } from '../test/helpers/world.js';
import { runAs } from '../test/helpers/run-as.js';
import { pkgRoot } from '../test/helpers/paths.js';
import { median, row, writeResult, type ResultTarget, type Series } from './lib/results.js';

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : dflt;
};
/** ENTRIESxOBJECTS. */
const cases = arg('--cases', '1000x16,100000x16,1000000x16,10000x5000,110000x100000').split(',').map((c) => c.split('x').map(Number) as [number, number]);
const rootfsSizes = arg('--rootfs-sizes', '1000,100000,1000000').split(',').filter(Boolean).map(Number);
const calls = Number(arg('--calls', '50'));
const all = { users: ['*'] };
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

/**
 * The executor's kernel steps for one composefs mount, done here: the EROFS
 * file mounted read-only, idmapped through `userns`, the overlay over it with
 * `dataDir` as data-only layer. Returns ms; the mount fd is closed after the clock stops.
 */
function rawMount(image: string, dataDir: string, userns: number): number {
  const t0 = performance.now();
  const efs = sys.fsopen('erofs');
  sys.fsconfigString(efs, 'source', image);
  sys.fsconfigString(efs, 'ro');
  sys.fsconfigCreate(efs);
  const erofs = sys.fsmount(efs, sys.MOUNT_ATTR.RDONLY | sys.MOUNT_ATTR.NOSUID | sys.MOUNT_ATTR.NODEV);
  closeSync(efs);
  sys.mountSetattr(erofs, sys.MOUNT_ATTR.IDMAP | sys.MOUNT_ATTR.NOSUID | sys.MOUNT_ATTR.NODEV, 0, userns);
  const ofs = sys.fsopen('overlay');
  sys.fsconfigString(ofs, 'source', 'composefs');
  sys.fsconfigFd(ofs, 'lowerdir+', erofs);
  sys.fsconfigString(ofs, 'datadir+', dataDir);
  sys.fsconfigString(ofs, 'metacopy', 'on');
  sys.fsconfigString(ofs, 'redirect_dir', 'on');
  sys.fsconfigCreate(ofs);
  const overlay = sys.fsmount(ofs, sys.MOUNT_ATTR.RDONLY | sys.MOUNT_ATTR.NOSUID | sys.MOUNT_ATTR.NODEV);
  closeSync(ofs);
  closeSync(erofs);
  const ms = performance.now() - t0;
  closeSync(overlay);
  return ms;
}

type ClientOut = { imageId: string; entries: number; objects: number; addMs: number; putMs: number; info: { uidMap: IdRange[]; gidMap: IdRange[]; verity: boolean }; samples: Record<string, number[]> };

const world = await createWorld({
  users: { bench: {} },
  policy: {
    version: 1,
    methods: { AddImage: all, PutObjects: all, MountImage: all, ListImages: all, RemoveImage: all },
    limits: { concurrentRequests: 8, requestsPerMinute: 1_000_000 },
    images: { maxEntriesPerImage: 2_000_000, maxBytesPerUser: 2 ** 50, maxManifestBytes: 500_000_000 },
  },
});
const client = async (args: string[]) => {
  const r = await runAs(world.users.bench!, [process.execPath, '--max-old-space-size=8192', join(pkgRoot, 'bench', 'mount-client.mjs'), ...args], {
    busAddress: world.bus.address,
    env: { MOUNTGATE_TEST_PKG: pkgRoot },
    timeoutMs: 1_800_000,
  });
  if (r.code !== 0) throw new Error(`bench client failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as ClientOut;
};
const namespaces = new UserNamespaceCache();
const target: ResultTarget = { target: 'MountImage: O(1) in entries and objects; at most 3x the raw kernel steps done in-process by a script in the same run', limit: 3, unit: 'ratio', rows: [] };
const byEntries: Series = { title: 'MountImage time against entries (16 objects)', x: 'entries', y: 'ms (median)', lines: [{ name: 'mountgate', points: [] }, { name: 'raw kernel steps (script, root)', points: [] }, { name: 'GetInfo (a bus round trip)', points: [] }] };
const byObjects: Series = { title: 'MountImage time against objects', x: 'objects', y: 'ms (median)', lines: [{ name: 'mountgate', points: [] }, { name: 'raw kernel steps (script, root)', points: [] }, { name: 'GetInfo (a bus round trip)', points: [] }] };
const rootfs: Series = { title: 'Time to a usable root filesystem against entries', x: 'entries', y: 's', lines: [{ name: 'mountgate (MountImage)', points: [] }, { name: 'tar -x', points: [] }, { name: 'cp -al', points: [] }] };
try {
  console.log(`MountImage: call to usable mount fd, ${calls} calls each (medians); reference = the same kernel steps done in-process by this script, same run`);
  console.log('entries   objects  AddImage(s)  upload(s)  mount (ms)  p90   raw steps (ms)  ratio  GetInfo (ms)');
  for (const [entries, objects] of cases) {
    const out = await client([String(entries), String(objects), String(calls), 'keep']);
    const image = join(world.broker.stateDir, 'images', out.imageId, 'image.erofs');
    const dataDir = join(world.broker.stateDir, 'store', 'objects');
    const userns = await namespaces.get(out.info.uidMap, out.info.gidMap);
    for (let k = 0; k < 5; k++) rawMount(image, dataDir, userns);
    const raw = Array.from({ length: calls }, () => rawMount(image, dataDir, userns));
    const rm = await runAs(world.users.bench!, [process.execPath, join(pkgRoot, 'bin', 'mountgate'), 'image', 'rm', out.imageId], { busAddress: world.bus.address });
    if (rm.code !== 0) throw new Error(`image rm failed: ${rm.stderr}`);
    const m = median(out.samples.MountImage!);
    const g = median(out.samples.GetInfo!);
    const r = median(raw);
    const p90 = [...out.samples.MountImage!].sort((a, b) => a - b)[Math.floor(0.9 * calls)]!;
    target.rows.push(row(target, `${out.entries} entries, ${out.objects} objects (ms)`, m, r));
    const series = objects > 16 ? byObjects : byEntries;
    const x = objects > 16 ? out.objects : out.entries;
    for (const [k, v] of [m, r, g].entries()) series.lines[k]!.points.push([x, v]);
    console.log(
      `${String(out.entries).padEnd(9)} ${String(out.objects).padStart(7)} ${(out.addMs / 1000).toFixed(2).padStart(12)} ${(out.putMs / 1000).toFixed(2).padStart(10)} ${m.toFixed(2).padStart(11)} ${p90.toFixed(2).padStart(5)} ${r.toFixed(3).padStart(15)} ${(m / r).toFixed(1).padStart(6)} ${g.toFixed(2).padStart(13)}`,
    );
  }

  console.log('\nTime to a usable root filesystem (s), same tree; tar and cp -al prepared beforehand, page cache warm');
  console.log('entries    mountgate  tar -x   cp -al');
  for (const entries of rootfsSizes) {
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
      const mg = median((await client([String(entries), '16', '5'])).samples.MountImage!) / 1000;
      for (const [k, v] of [mg, tar, cp].entries()) rootfs.lines[k]!.points.push([entries, v]);
      console.log(`${String(entries).padEnd(10)} ${mg.toFixed(4).padStart(9)} ${tar.toFixed(3).padStart(7)} ${cp.toFixed(3).padStart(8)}`);
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  }
  console.log('(mountgate: MountImage of an image already registered and uploaded; registering it is AddImage above)');
  const series = [byEntries, byObjects, ...(rootfsSizes.length > 0 ? [rootfs] : [])];
  console.log(`wrote ${writeResult({ bench: 'mount', targets: [target], series })}`);
} finally {
  namespaces.close();
  await world.teardown();
}
