// Upload throughput against object count: a real tree (parts of this
// machine's Debian /usr) registered and uploaded by an unprivileged user, the
// files passed as fds that the broker hashes itself, against `sha256sum` over
// the same files in the same run (page cache warm for both). Then a second
// user imports the same tree: every object is already in the store, so none
// may be written again (the object files keep their inodes and times) and
// the upload is hashing only. Last, end to end: `mountgate image add` of all
// of /usr run as a test user (the real client: walk, digests, AddImage,
// upload), against sha256sum of its files. Beside each first upload it
// times creating as many files of the same sizes next to the store (what a
// first upload cannot go below on this filesystem; see createFloor). /usr is seen through a read-only
// bind mount outside the world's scratch directory, with what other users
// cannot read covered by empty stand-ins (a test user could not read it; the
// real client would refuse the tree).
//   sudo bash bench/run.sh upload [--trees /usr/share/icons,/usr/share] [--whole /usr | --whole none]
// Writes bench/results/upload.json.
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmdirSync, rmSync, statSync, writeSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { manifestFromDirectory } from '../src/client/images.js';
import { byteKey } from '../src/manifest/text.js';
import type { Manifest } from '../src/schema/types.generated.js';
import { createWorld } from '../test/helpers/world.js';
import { runAs } from '../test/helpers/run-as.js';
import { pkgRoot } from '../test/helpers/paths.js';
import { writeResult } from './lib/results.js';

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : dflt;
};
const trees = arg('--trees', '/usr/share/icons,/usr/share').split(',');
const wholeTree = arg('--whole', '/usr');
const all = { users: ['*'] };

/** The tree's manifest without what another user cannot read (a directory without o+rx, a file without o+r, links to them). */
function readableByOthers(manifest: Manifest, sources: Map<string, string | Buffer>): { manifest: Manifest; sources: Record<string, string> } {
  const blocked: string[] = [];
  const dropped = new Set<string>();
  const entries = manifest.entries.filter((e) => {
    const path = byteKey(e.path);
    if (blocked.some((b) => path.startsWith(`${b}/`))) return false;
    if (e.type === 'dir' && (e.mode & 0o005) !== 0o005 && path !== '/') {
      blocked.push(path);
      return false;
    }
    if (e.type === 'file' && (e.mode & 0o004) === 0) {
      dropped.add(path);
      return false;
    }
    if (e.type === 'hardlink' && (dropped.has(byteKey(e.target)) || blocked.some((b) => byteKey(e.target).startsWith(`${b}/`)))) return false;
    return true;
  });
  const wanted = new Set(entries.flatMap((e) => (e.type === 'file' && e.digest ? [e.digest] : [])));
  const out: Record<string, string> = {};
  for (const [d, p] of sources) if (wanted.has(d) && typeof p === 'string') out[d] = p;
  return { manifest: { ...manifest, entries }, sources: out };
}

/** Object files of the store with their inode and change time: a file written again would change them. */
function objectFiles(store: string): Map<string, string> {
  const out = new Map<string, string>();
  const root = join(store, 'objects');
  for (const p of readdirSync(root)) {
    for (const f of readdirSync(join(root, p))) {
      const st = statSync(join(root, p, f));
      out.set(p + f, `${st.ino}:${st.ctimeMs}`);
    }
  }
  return out;
}

/**
 * `tree` seen read-only at a new path, with every directory other users
 * cannot enter and every file they cannot read covered by an empty one (a
 * tmpfs, an empty file): the tree a test user can import. Unmount it with the
 * returned function (before anything removes directories).
 */
function readableView(tree: string): { view: string; release: () => void } {
  const view = mkdtempSync('/tmp/mountgate-bench-view.');
  execFileSync('mount', ['--bind', tree, view]);
  execFileSync('mount', ['-o', 'remount,bind,ro', view]);
  const release = () => {
    execFileSync('umount', ['-R', view]);
    rmdirSync(view);
  };
  try {
    const hidden = execFileSync('find', [view, '(', '-type', 'd', '!', '-perm', '-o=rx', '-print', '-prune', ')', '-o', '(', '-type', 'f', '!', '-perm', '-o=r', '-print', ')'], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean);
    const emptyFile = `${view}.empty`;
    writeFileSync(emptyFile, '', { mode: 0o644 });
    try {
      for (const p of hidden) {
        if (statSync(p).isDirectory()) execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro,mode=755,size=4k', 'hidden', p]);
        else execFileSync('mount', ['--bind', '-o', 'ro', emptyFile, p]);
      }
    } finally {
      execFileSync('rm', ['-f', emptyFile]);
    }
    console.log(`${tree} as ${view}: ${hidden.length} entr${hidden.length === 1 ? 'y' : 'ies'} other users cannot read covered (${hidden.slice(0, 3).map((p) => p.slice(view.length)).join(', ')})`);
  } catch (err) {
    release();
    throw err;
  }
  return { view, release };
}

/** Every regular file of `tree` with content (the files a manifest needs objects for), and their bytes. */
function contentFiles(tree: string): { paths: string[]; bytes: number } {
  const out = execFileSync('find', [tree, '-type', 'f', '-size', '+0', '-printf', '%s %p\\0'], { encoding: 'utf8', maxBuffer: 1 << 30 });
  const paths: string[] = [];
  let bytes = 0;
  for (const rec of out.split('\0')) {
    if (!rec) continue;
    const space = rec.indexOf(' ');
    bytes += Number(rec.slice(0, space));
    paths.push(rec.slice(space + 1));
  }
  return { paths, bytes };
}

/**
 * What a first upload cannot go below on this filesystem: as many new files
 * as objects, of their sizes, created read-only, written and closed, beside
 * the store (same filesystem, same region of it), with no hashing. On an ext4
 * without a journal a create skips every inode freed in its block group in
 * the last minute or more (several while their inode table is dirty), so
 * this varies with what anyone deleted nearby: a calibration measured in the
 * same run, not a target. The files are removed only after the uploads (their
 * deletion would slow the uploads' own creates).
 */
function createFloor(near: string, sizes: number[]): { ms: number; remove: () => void } {
  const dir = mkdtempSync(join(near, 'create-floor.'));
  const data = Buffer.alloc(1 << 20, 0x5a);
  const t0 = performance.now();
  sizes.forEach((size, i) => {
    const fd = openSync(join(dir, String(i)), 'wx', 0o444);
    try {
      for (let at = 0; at < size; ) at += writeSync(fd, data, 0, Math.min(data.length, size - at));
    } finally {
      closeSync(fd);
    }
  });
  return { ms: performance.now() - t0, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

function sha256sumMs(paths: string[]): number {
  const list = join('/tmp', `mountgate-bench-sha-${process.pid}`);
  writeFileSync(list, `${paths.join('\0')}\0`);
  try {
    const t0 = performance.now();
    execFileSync('sh', ['-c', `xargs -0 -n 2000 sha256sum < ${list} > /dev/null`], { stdio: ['ignore', 'ignore', 'inherit'] });
    return performance.now() - t0;
  } finally {
    rmSync(list, { force: true });
  }
}

const world = await createWorld({
  users: { alice: {}, bob: {} },
  policy: {
    version: 1,
    methods: { AddImage: all, PutObjects: all, ProveObjects: all, MountImage: all, ListImages: all, RemoveImage: all },
    limits: { concurrentRequests: 8, requestsPerMinute: 1_000_000 },
    images: { maxEntriesPerImage: 2_000_000, maxBytesPerUser: 2 ** 50, maxManifestBytes: 500_000_000 },
  },
});
const store = join(world.broker.stateDir, 'store');
type Row = { case: string; mountgate: number; reference: number; ratio: number; pass: boolean; [k: string]: unknown };
const speed: Row[] = [];
const again: Row[] = [];
const whole: Row[] = [];
const points = { first: [] as [number, number][], second: [] as [number, number][], sha: [] as [number, number][], whole: [] as [number, number][], wholeSha: [] as [number, number][] };
try {
  console.log('Upload (files passed as fds; the broker hashes and stores them) against sha256sum of the same files, same run');
  console.log('tree                 objects       MiB  AddImage(s)  upload(s)  sha256sum(s)  ratio  creates alone(s)  | 2nd user upload(s)  ratio  rewritten');
  for (const tree of trees) {
    const built = await manifestFromDirectory(tree, { name: tree.replaceAll('/', '_') });
    const { manifest, sources } = readableByOthers(built.manifest, built.sources);
    const paths = Object.values(sources);
    const objects = paths.length;
    const bytes = paths.reduce((n, p) => n + statSync(p).size, 0);
    const file = world.file(`manifest-${objects}.json`, JSON.stringify({ manifest, sources }));
    // Both read from a warm page cache: the manifest's digests just read every file; sha256sum once more to be sure.
    sha256sumMs(paths);
    const sha = sha256sumMs(paths);
    const upload = async (user: 'alice' | 'bob', how: 'files' | 'prove' = 'files') => {
      const r = await runAs(world.users[user]!, [process.execPath, join(pkgRoot, 'bench', 'upload-client.mjs'), file, how], {
        busAddress: world.bus.address,
        env: { MOUNTGATE_TEST_PKG: pkgRoot },
        timeoutMs: 3_600_000,
      });
      if (r.code !== 0) {
        const errors = world.broker.audit.filter((l) => l.event === 'error' || l.allowed === false || (l.event === 'result' && l.ok === false)).slice(-3);
        throw new Error(`upload as ${user} failed (${r.code}): ${r.stderr}\nthe broker's last errors: ${JSON.stringify(errors)}`);
      }
      return JSON.parse(r.stdout) as { imageId: string; addMs: number; putMs: number; missing: number; proved?: number; uploaded: { objects: number; bytes: number } };
    };
    const floor = createFloor(dirname(world.broker.stateDir), paths.map((p) => statSync(p).size));
    const first = await upload('alice');
    const before = objectFiles(store);
    const second = await upload('bob');
    const after = objectFiles(store);
    floor.remove();
    let rewritten = 0;
    for (const [d, v] of before) if (after.get(d) !== v) rewritten++;
    rewritten += after.size - before.size;
    const ratio = sha / first.putMs;
    const ratio2 = sha / second.putMs;
    console.log(
      `${tree.padEnd(20)} ${String(objects).padStart(7)} ${(bytes / 2 ** 20).toFixed(0).padStart(9)} ${(first.addMs / 1000).toFixed(2).padStart(12)} ${(first.putMs / 1000).toFixed(2).padStart(10)} ${(sha / 1000).toFixed(2).padStart(13)} ${ratio.toFixed(2).padStart(6)} ${(floor.ms / 1000).toFixed(2).padStart(17)}  | ${(second.putMs / 1000).toFixed(2).padStart(18)} ${ratio2.toFixed(2).padStart(6)} ${String(rewritten).padStart(10)}`,
    );
    const label = `${tree} (${objects} objects, ${(bytes / 2 ** 20).toFixed(0)} MiB)`;
    const load = loadavg()[0]!;
    speed.push({ case: label, mountgate: first.putMs, reference: sha, ratio, pass: ratio >= 0.8 && first.uploaded.objects === objects, objects, bytes, addImageMs: first.addMs, createsAloneMs: floor.ms, load });
    speed.push({ case: `${label}, second user (hash only)`, mountgate: second.putMs, reference: sha, ratio: ratio2, pass: ratio2 >= 0.8 && second.uploaded.objects === objects, objects, bytes, load });
    again.push({ case: `${label}, second user`, mountgate: second.putMs, reference: sha, ratio: ratio2, pass: rewritten === 0 && second.uploaded.objects === objects, rewritten, accepted: second.uploaded.objects });
    if (objects >= 100_000) whole.push({ case: label, mountgate: first.putMs, reference: sha, ratio, pass: first.uploaded.objects === objects, accepted: first.uploaded.objects });
    points.first.push([objects, first.putMs]);
    points.second.push([objects, second.putMs]);
    points.sha.push([objects, sha]);
    // A clean store for the next tree (or the next way): otherwise its objects would already be there.
    const removeBoth = async () => {
      const seen = world.broker.audit.length;
      for (const user of ['alice', 'bob'] as const) {
        const r = await runAs(world.users[user]!, [process.execPath, join(pkgRoot, 'bin', 'mountgate'), 'image', 'rm', first.imageId], { busAddress: world.bus.address });
        if (r.code !== 0) throw new Error(`image rm as ${user} failed: ${r.stderr}`);
      }
      // Their deletions done before the next creates (deletions nearby slow this filesystem's creates; see createFloor).
      await world.broker.waitFor((l) => l.event === 'store' && typeof l.deleted === 'number' && world.broker.audit.indexOf(l) >= seen, 600_000).catch(() => undefined);
    };
    await removeBoth();
    // The way `image add DIR` goes: ProveObjects (the broker hashes every file and holds it), then AddImage adopts.
    const pFloor = createFloor(dirname(world.broker.stateDir), paths.map((p) => statSync(p).size));
    const pFirst = await upload('alice', 'prove');
    const pBefore = objectFiles(store);
    const pSecond = await upload('bob', 'prove');
    const pAfter = objectFiles(store);
    pFloor.remove();
    let pRewritten = 0;
    for (const [d, v] of pBefore) if (pAfter.get(d) !== v) pRewritten++;
    pRewritten += pAfter.size - pBefore.size;
    const pRatio = sha / (pFirst.putMs + pFirst.addMs);
    const pRatio2 = sha / (pSecond.putMs + pSecond.addMs);
    console.log(
      `${`${tree} (prove)`.padEnd(20)} ${String(objects).padStart(7)} ${(bytes / 2 ** 20).toFixed(0).padStart(9)} ${(pFirst.addMs / 1000).toFixed(2).padStart(12)} ${(pFirst.putMs / 1000).toFixed(2).padStart(10)} ${(sha / 1000).toFixed(2).padStart(13)} ${pRatio.toFixed(2).padStart(6)} ${(pFloor.ms / 1000).toFixed(2).padStart(17)}  | ${((pSecond.putMs + pSecond.addMs) / 1000).toFixed(2).padStart(18)} ${pRatio2.toFixed(2).padStart(6)} ${String(pRewritten).padStart(10)}`,
    );
    const proveLoad = loadavg()[0]!;
    const complete = (r: typeof pFirst) => r.missing === 0 && r.proved === objects;
    speed.push({ case: `${label}, ProveObjects + AddImage (image add DIR's way: the client hashes nothing)`, mountgate: pFirst.putMs + pFirst.addMs, reference: sha, ratio: pRatio, pass: pRatio >= 0.8 && complete(pFirst), objects, bytes, proveMs: pFirst.putMs, addImageMs: pFirst.addMs, createsAloneMs: pFloor.ms, load: proveLoad });
    speed.push({ case: `${label}, ProveObjects + AddImage, second user`, mountgate: pSecond.putMs + pSecond.addMs, reference: sha, ratio: pRatio2, pass: pRatio2 >= 0.8 && complete(pSecond), objects, bytes, proveMs: pSecond.putMs, addImageMs: pSecond.addMs, load: proveLoad });
    again.push({ case: `${label}, second user, ProveObjects`, mountgate: pSecond.putMs + pSecond.addMs, reference: sha, ratio: pRatio2, pass: pRewritten === 0 && complete(pSecond), rewritten: pRewritten, proved: pSecond.proved });
    await removeBoth();
  }
  if (wholeTree !== 'none') {
    const { view, release } = readableView(wholeTree);
    try {
      const { paths, bytes } = contentFiles(view);
      sha256sumMs(paths);
      const sha = sha256sumMs(paths);
      const load = loadavg()[0]!;
      const t0 = performance.now();
      const r = await runAs(world.users.alice!, [process.execPath, join(pkgRoot, 'bin', 'mountgate'), 'image', 'add', view, '--name', 'usr', '--json'], {
        busAddress: world.bus.address,
        env: { MOUNTGATE_TRACE_STARTUP: '1' },
        timeoutMs: 3_600_000,
      });
      const ms = performance.now() - t0;
      // The client's phases (ms since it started): the walk with ProveObjects, AddImage, the upload.
      console.log(`  phases: ${r.stderr.split('\n').filter((l) => l.startsWith('mountgate: trace ')).map((l) => l.slice('mountgate: trace '.length)).join(' | ')}`);
      if (r.code !== 0) throw new Error(`mountgate image add ${wholeTree} failed (${r.code}): ${r.stderr.slice(-2000)}`);
      const added = JSON.parse(r.stdout) as { id: string; uploaded: { objects: number; bytes: number } };
      const images = JSON.parse((await runAs(world.users.alice!, [process.execPath, join(pkgRoot, 'bin', 'mountgate'), 'image', 'ls', '--json'], { busAddress: world.bus.address })).stdout) as { id: string; objects: number; missing: number }[];
      const image = images.find((i) => i.id === added.id);
      const ratio = sha / ms;
      console.log(
        `end to end: mountgate image add ${wholeTree} as a test user: ${(ms / 1000).toFixed(2)} s, ${paths.length} files with content (${(bytes / 2 ** 30).toFixed(2)} GiB), ` +
          `${added.uploaded.objects} objects uploaded (${(added.uploaded.bytes / 2 ** 30).toFixed(2)} GiB), ${image?.missing ?? '?'} missing after; sha256sum of the same files ${(sha / 1000).toFixed(2)} s; ratio ${ratio.toFixed(2)}; load ${load.toFixed(1)}`,
      );
      whole.push({
        case: `mountgate image add ${wholeTree} end to end (${paths.length} files, ${image?.objects ?? added.uploaded.objects} objects, ${(bytes / 2 ** 30).toFixed(1)} GiB)`,
        mountgate: ms,
        reference: sha,
        ratio,
        // Uploaded by PutObjects or adopted from ProveObjects' holds: either way nothing is missing.
        pass: image !== undefined && image.missing === 0,
        files: paths.length,
        objects: image?.objects,
        bytes,
        uploadedObjects: added.uploaded.objects,
        uploadedBytes: added.uploaded.bytes,
        load,
      });
      points.whole.push([added.uploaded.objects, ms]);
      points.wholeSha.push([added.uploaded.objects, sha]);
      const rm = await runAs(world.users.alice!, [process.execPath, join(pkgRoot, 'bin', 'mountgate'), 'image', 'rm', added.id], { busAddress: world.bus.address, timeoutMs: 600_000 });
      if (rm.code !== 0) throw new Error(`image rm failed: ${rm.stderr}`);
    } finally {
      release();
    }
  }
} finally {
  await world.teardown();
}
const results = {
  bench: 'upload',
  targets: [
    { target: 'Uploads: at least 0.8x the throughput of sha256sum over the same bytes (ratio = sha256sum time / upload time)', limit: 0.8, unit: 'ratio', direction: 'at-least' as const, rows: speed },
    { target: 'An object the store already holds is never written again (a second user importing the same tree)', limit: 0, unit: 'objects rewritten', rows: again },
    { target: 'A 106,000-object image (Debian /usr) uploads end to end (`mountgate image add` as a user; ratio = sha256sum time / its time)', limit: 1, unit: 'uploaded', direction: 'at-least' as const, rows: whole },
  ],
  series: [
    {
      title: 'Upload time against objects',
      x: 'objects',
      y: 'ms',
      lines: [
        { name: 'mountgate', points: points.first },
        { name: 'mountgate, second user (hash only)', points: points.second },
        { name: 'sha256sum', points: points.sha },
        { name: 'mountgate image add, end to end', points: points.whole },
        { name: 'sha256sum, end-to-end case', points: points.wholeSha },
      ],
    },
  ],
};
console.log(`wrote ${writeResult(results)}`);
