// Import of the images people have (issue 9), as a test user through the real
// broker, against the tools they would use instead, side by side in one run:
// - a debootstrap root filesystem (bookworm minbase, built once and cached
//   under /var/tmp/mountgate-bench/), imported as a directory and as a
//   tarball, against `podman import` of the same tarball and `sha256sum` of
//   the same bytes;
// - the same tree imported again, by the same user (also with
//   --no-digest-cache) and by a second one, each user's client caches
//   emptied before the first import of a run, against the time to hash
//   it, counting what the broker writes: the
//   store's objects (count, size, and any rewritten: inode and ctime) and
//   write_bytes of the broker's processes (/proc/PID/io, reaped upload
//   helpers included);
// - a tree of 100,000 small files, as a directory and as a tarball: entries
//   per second, against `tar -c | sha256sum` over it.
// Every figure is the median of --runs runs; each row carries the load
// average (1 min) over its runs.
//   sudo bash bench/run.sh import [--runs 3] [--small-runs N] [--cases deb,small]
// Writes bench/results/import.json.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync, chownSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Policy } from '../src/schema/types.generated.js';
import { createWorld } from '../test/helpers/world.js';
import { runAs } from '../test/helpers/run-as.js';
import { pkgRoot } from '../test/helpers/paths.js';
import type { TestUser } from '../test/helpers/users.js';
import { median, row, writeResult, type ResultRow } from './lib/results.js';

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : dflt;
};
const runs = Number(arg('--runs', '3'));
/** The 100,000-file cases take minutes each: their own count. */
const smallRuns = Number(arg('--small-runs', String(runs)));
const cases = arg('--cases', 'deb,small').split(',');
const cache = process.env.MOUNTGATE_BENCH_CACHE ?? '/var/tmp/mountgate-bench';
const MiB = 2 ** 20;
const cli = join(pkgRoot, 'bin', 'mountgate');

/** The Debian mirror this machine's apt uses (one-line or deb822 sources), for debootstrap. */
function debianMirror(): string {
  const files = ['/etc/apt/sources.list', ...(existsSync('/etc/apt/sources.list.d') ? readdirSync('/etc/apt/sources.list.d').map((f) => join('/etc/apt/sources.list.d', f)) : [])];
  for (const f of files) {
    let text: string;
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    const line = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s/m.exec(text);
    if (line) return line[1]!;
    for (const stanza of text.split(/\n\s*\n/)) {
      const uris = /^URIs:\s*(\S+)/m.exec(stanza);
      if (uris && /^Suites:.*\bbookworm\b/m.test(stanza) && /^Components:.*\bmain\b/m.test(stanza) && !uris[1]!.includes('security')) return uris[1]!;
    }
  }
  return 'http://deb.debian.org/debian';
}

/** `script` run once under the cache's lock unless `name` is there already; its path. */
function cached(name: string, script: string): string {
  mkdirSync(cache, { recursive: true, mode: 0o755 });
  const path = join(cache, name);
  if (!existsSync(path)) {
    console.log(`building ${path} (once; later runs reuse it)`);
    execFileSync('flock', [join(cache, '.lock'), 'sh', '-euc', `cd "$1"; [ -e "$2" ] || { ${script} }`, 'sh', cache, name], { stdio: ['ignore', 'inherit', 'inherit'], timeout: 3_600_000 });
  }
  return path;
}

/**
 * The debootstrap tree as a user can import it: device nodes dropped (an
 * image holds none) and made readable by all (chmod a+rX: a test user
 * imports it), and its tarball (GNU tar, xattrs, numeric owners).
 */
function debootstrapTree(): { dir: string; tar: string } {
  cached('debootstrap', `debootstrap --variant=minbase bookworm debootstrap.partial ${debianMirror()} > debootstrap.log 2>&1 || { tail -20 debootstrap.log >&2; exit 1; }; mv debootstrap.partial debootstrap;`);
  const dir = cached('bookworm-minbase', 'rm -rf t.partial; cp -a debootstrap t.partial; find t.partial -xdev \\( -type b -o -type c \\) -delete; chmod -R a+rX t.partial; mv t.partial "$2";');
  const tar = cached('bookworm-minbase.tar', 'tar --xattrs --numeric-owner -C bookworm-minbase -cf t.tar.partial .; chmod 644 t.tar.partial; mv t.tar.partial "$2";');
  return { dir, tar };
}

/** 100,000 small files (100 directories of 1,000; 64 to 1,087 bytes, each content distinct) and their tarball. */
function smallTree(): { dir: string; tar: string } {
  const name = 'small100k';
  const dir = join(cache, name);
  if (!existsSync(dir)) {
    const partial = `${dir}.partial`;
    rmSync(partial, { recursive: true, force: true });
    mkdirSync(partial, { mode: 0o755 });
    for (let d = 0; d < 100; d++) {
      const sub = join(partial, `d${String(d).padStart(3, '0')}`);
      mkdirSync(sub, { mode: 0o755 });
      for (let f = 0; f < 1000; f++) {
        const i = d * 1000 + f;
        const body = `${i}\n`.padEnd(64 + ((i * 37) % 1024), 'abcdefghijklmnopqrstuvwxyz');
        writeFileSync(join(sub, `f${String(f).padStart(4, '0')}`), body, { mode: 0o644 });
      }
    }
    execFileSync('mv', [partial, dir]);
  }
  const tar = cached(`${name}.tar`, `tar --numeric-owner -C ${name} -cf t.tar.partial .; chmod 644 t.tar.partial; mv t.tar.partial "$2";`);
  return { dir, tar };
}

function regularFiles(dir: string): string[] {
  const out = execFileSync('find', [dir, '-xdev', '-type', 'f', '-print0'], { maxBuffer: 1 << 30 });
  return out.toString('utf8').split('\0').filter(Boolean);
}

function entriesOf(dir: string): number {
  return execFileSync('find', [dir, '-xdev'], { maxBuffer: 1 << 30 }).toString().split('\n').filter(Boolean).length;
}

function ms(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
}

/** sha256sum over files (many at a time), or `sh -c` of a pipeline; its time in ms. */
function shaFilesMs(paths: string[]): number {
  const list = join('/tmp', `mountgate-bench-import-${process.pid}`);
  writeFileSync(list, `${paths.join('\0')}\0`);
  try {
    return ms(() => execFileSync('sh', ['-c', `xargs -0 -n 2000 sha256sum < ${list} > /dev/null`], { stdio: ['ignore', 'ignore', 'inherit'] }));
  } finally {
    rmSync(list, { force: true });
  }
}
/**
 * The floor of a first import: the tree copied (`cp -a`) into a new
 * directory on the store's filesystem and synced (`sync -f`), as the store
 * must hold every object durably, then removed; its time in ms. No hashing.
 */
function copyFloorMs(dir: string): number {
  const target = mkdtempSync(join(dirname(world.broker.stateDir), 'copy-floor.'));
  try {
    return ms(() => execFileSync('sh', ['-c', 'cp -a "$1" "$2/tree" && sync -f "$2"', 'sh', dir, target], { stdio: ['ignore', 'ignore', 'inherit'] }));
  } finally {
    rmSync(target, { recursive: true, force: true });
  }
}
const shMs = (script: string) => ms(() => execFileSync('sh', ['-c', script], { stdio: ['ignore', 'ignore', 'inherit'], maxBuffer: 1 << 20 }));
const load1 = () => Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);

const all = { users: ['*'] };
const policy: Policy = {
  version: 1,
  methods: { AddImage: all, PutObjects: all, ProveObjects: all, MountImage: all, ListImages: all, RemoveImage: all },
  limits: { concurrentRequests: 8, requestsPerMinute: 1_000_000 },
  images: { maxEntriesPerImage: 2_000_000, maxBytesPerUser: 2 ** 50, maxManifestBytes: 500_000_000 },
};
const world = await createWorld({ users: { alice: {}, bob: {} }, policy });
const store = join(world.broker.stateDir, 'store', 'objects');

interface StoreFiles {
  count: number;
  bytes: number;
  /** digest -> inode:ctime (a file written again changes them) and size. */
  files: Map<string, { id: string; size: number }>;
}

/** The store's object files. */
function objectFiles(): StoreFiles {
  const files = new Map<string, { id: string; size: number }>();
  let bytes = 0;
  for (const p of existsSync(store) ? readdirSync(store) : []) {
    for (const f of readdirSync(join(store, p))) {
      // A removed image's files are being deleted meanwhile (after its RemoveImage was answered).
      const st = statSync(join(store, p, f), { throwIfNoEntry: false });
      if (!st) continue;
      files.set(p + f, { id: `${st.ino}:${st.ctimeMs}`, size: st.size });
      bytes += st.size;
    }
  }
  return { count: files.size, bytes, files };
}

/** What went into the store between two looks: objects added or written again, and their bytes. */
function storeWrites(a: StoreFiles, b: StoreFiles): { objects: number; bytes: number } {
  let objects = 0;
  let bytes = 0;
  for (const [d, f] of b.files) {
    if (a.files.get(d)?.id === f.id) continue;
    objects++;
    bytes += f.size;
  }
  return { objects, bytes };
}

/** write_bytes and wchar summed over the broker's processes (the root main, the front, helpers; reaped children count in their parent). */
function brokerIo(): { writeBytes: number; wchar: number } {
  const parent = new Map<number, number>();
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      parent.set(Number(p), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone
    }
  }
  const inTree = (pid: number): boolean => {
    for (let p: number | undefined = pid, hops = 0; p !== undefined && p > 1 && hops < 64; p = parent.get(p), hops++) if (p === world.broker.pid) return true;
    return false;
  };
  let writeBytes = 0;
  let wchar = 0;
  for (const pid of parent.keys()) {
    if (!inTree(pid)) continue;
    try {
      const io = readFileSync(`/proc/${pid}/io`, 'utf8');
      writeBytes += Number(/write_bytes: (\d+)/.exec(io)![1]);
      wchar += Number(/wchar: (\d+)/.exec(io)![1]);
    } catch {
      // gone
    }
  }
  return { writeBytes, wchar };
}

interface Added {
  id: string;
  uploaded: { objects: number; bytes: number };
  digestCache?: { hits: number; misses: number };
  scanCache?: 'hit' | 'miss';
}

/** Each user's XDG_CACHE_HOME, where the client keeps its digest cache (a test user's HOME does not exist). */
function cacheHome(user: TestUser): string {
  const dir = join(world.scratch, `cache-${user.uid}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chownSync(dir, user.uid, user.gid);
  return dir;
}
/** Forgets what the client cached for `user`: a first import is a first import. */
function clearCache(user: TestUser): void {
  rmSync(join(cacheHome(user), 'mountgate'), { recursive: true, force: true });
}

/** `mountgate image add SOURCE` as `user`: the whole process, timed. */
async function imageAdd(user: TestUser, source: string, name: string, extra: string[] = []): Promise<{ ms: number; added: Added }> {
  const t0 = performance.now();
  const r = await runAs(user, [process.execPath, cli, 'image', 'add', source, '--name', name, '--json', ...extra], { busAddress: world.bus.address, env: { XDG_CACHE_HOME: cacheHome(user) }, timeoutMs: 3_600_000 });
  const took = performance.now() - t0;
  if (r.code !== 0) throw new Error(`image add ${source} as ${user.name} failed (${r.code}): ${r.stderr.slice(-2000)}`);
  return { ms: took, added: JSON.parse(r.stdout.trim().split('\n').pop()!) as Added };
}

async function imageRm(user: TestUser, id: string): Promise<void> {
  const r = await runAs(user, [process.execPath, cli, 'image', 'rm', id], { busAddress: world.bus.address, timeoutMs: 1_800_000 });
  if (r.code !== 0) throw new Error(`image rm as ${user.name} failed (${r.code ?? r.signal}): ${r.stderr}`);
}

/** The broker deletes a removed image's files after answering (its `store` audit line says when): a first import waits for an empty store. */
async function storeEmptied(): Promise<void> {
  for (let waited = 0; objectFiles().count !== 0; waited += 100) {
    if (waited > 600_000) throw new Error('the store is not empty before a first import (10 min after the removals)');
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * `podman import` of a tarball: rootless as the test user when that works
 * here (its own storage under its directory), else as root with a private
 * storage root; the mode is reported. Storage is emptied after each run.
 */
const podmanScratch = join(world.scratch, 'podman');
let podmanMode: 'rootless' | 'root' | 'absent' = 'absent';
function podmanArgs(): string[] {
  return ['--root', join(podmanScratch, 'storage'), '--runroot', join(podmanScratch, 'run'), '--cgroup-manager', 'cgroupfs', '--events-backend', 'file', '--storage-driver', 'overlay'];
}
async function podmanImport(tar: string): Promise<number | null> {
  if (podmanMode === 'absent') return null;
  const alice = world.users.alice!;
  // Root removes what a rootless podman wrote under its subordinate ids too (an import leaves nothing mounted).
  const reset = () => rmSync(join(podmanScratch, 'storage'), { recursive: true, force: true });
  reset();
  const t0 = performance.now();
  let ok: boolean;
  let stderr: string;
  if (podmanMode === 'rootless') {
    const r = await runAs(alice, ['podman', ...podmanArgs(), 'import', '-q', tar, 'bench:import'], { env: { HOME: podmanScratch, XDG_RUNTIME_DIR: join(podmanScratch, 'xdg') }, timeoutMs: 3_600_000 });
    ok = r.code === 0;
    stderr = r.stderr;
  } else {
    const r = spawnSync('podman', [...podmanArgs(), 'import', '-q', tar, 'bench:import'], { encoding: 'utf8', timeout: 3_600_000 });
    ok = r.status === 0;
    stderr = r.stderr;
  }
  const took = performance.now() - t0;
  reset();
  if (!ok) throw new Error(`podman import (${podmanMode}) failed: ${stderr.slice(-1000)}`);
  return took;
}
/** Picks the podman mode: a rootless import of a one-file tarball as the test user, else root. */
async function choosePodman(): Promise<void> {
  if (spawnSync('podman', ['--version']).status !== 0) {
    console.log('podman is not installed: the podman comparison is skipped');
    return;
  }
  const alice = world.users.alice!;
  mkdirSync(join(podmanScratch, 'xdg'), { recursive: true, mode: 0o700 });
  chownSync(podmanScratch, alice.uid, alice.gid);
  chownSync(join(podmanScratch, 'xdg'), alice.uid, alice.gid);
  const probe = join(podmanScratch, 'probe.tar');
  execFileSync('sh', ['-c', `cd ${podmanScratch} && echo probe > probe.txt && tar -cf probe.tar probe.txt && chmod 644 probe.tar`]);
  podmanMode = 'rootless';
  try {
    await podmanImport(probe);
  } catch (err) {
    console.log(`rootless podman does not work here (${(err as Error).message.split('\n').filter(Boolean).slice(-1)[0]}): podman import runs as root, with a private storage root`);
    podmanMode = 'root';
    await podmanImport(probe);
  }
  console.log(`podman import runs ${podmanMode === 'rootless' ? 'rootless, as the same test user' : 'as root'} (overlay storage, emptied after each run)`);
}

type Row = ResultRow & Record<string, unknown>;
const speedVsPodman: Row[] = [];
const speedVsSha: Row[] = [];
const floorRows: Row[] = [];
const againRows: Row[] = [];
const writtenRows: Row[] = [];
const smallRows: Row[] = [];
const T = {
  podman: { target: 'Import of the debootstrap tree as a directory and as a tarball: at most 1.5x `podman import` of the same tarball (ratio = import time / podman time)', limit: 1.5, unit: 'ratio' },
  sha: { target: 'Import of the debootstrap tree: at least 0.8x the throughput of sha256sum over the same bytes (MiB/s; ratio = import / sha256sum)', limit: 0.8, unit: 'ratio', direction: 'at-least' as const },
  floor: {
    target: "Import of the debootstrap tree, the floor of a first import (not mountgate's work; for reading the row above): copying the tree into the store's filesystem and syncing it, what a first import must write at least, against sha256sum's throughput (ratio = copy / sha256sum; the most a first import could reach)",
    limit: 0.8,
    unit: 'ratio',
    direction: 'at-least' as const,
  },
  again: { target: 'The same tree imported again, by the same user and by a second user: at most the time to hash it (ratio = import time / sha256sum time)', limit: 1, unit: 'ratio' },
  written: { target: 'The same tree imported again: zero bytes written to the store (object bytes added or rewritten)', limit: 0, unit: 'bytes' },
  small: { target: 'A tree of 100,000 small files: entries per second, against `tar -c | sha256sum` over it (this bench holds it to the throughput target, 0.8x)', limit: 0.8, unit: 'ratio', direction: 'at-least' as const },
};

/** Runs `fn` `runs` times; the median of each figure it returns and the median load average. */
async function repeated<K extends string>(what: string, fn: (run: number) => Promise<Record<K, number>>, times = runs): Promise<Record<K, number> & { load1: number }> {
  const samples: Record<string, number[]> = { load1: [] };
  for (let i = 0; i < times; i++) {
    const figures = await fn(i);
    for (const [k, v] of Object.entries(figures) as [string, number][]) (samples[k] ??= []).push(v);
    samples.load1!.push(load1());
    console.log(`  ${what}, run ${i + 1}/${times}: ${Object.entries(figures).map(([k, v]) => `${k} ${(v as number).toFixed(k.endsWith('Ms') ? 0 : 2)}`).join(', ')}; load ${load1()}`);
  }
  return Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)])) as Record<K, number> & { load1: number };
}

async function debootstrapCases(): Promise<void> {
  const { dir, tar } = debootstrapTree();
  const files = regularFiles(dir);
  const fileBytes = files.reduce((n, f) => n + statSync(f).size, 0);
  const tarBytes = statSync(tar).size;
  const entries = entriesOf(dir);
  console.log(`debootstrap tree ${dir}: ${entries} entries, ${files.length} files, ${(fileBytes / MiB).toFixed(1)} MiB; tarball ${(tarBytes / MiB).toFixed(1)} MiB`);
  const alice = world.users.alice!;
  const bob = world.users.bob!;
  // Warm the page cache for every reader alike.
  shaFilesMs(files);
  shMs(`sha256sum ${tar}`);
  for (const [kind, source, bytes] of [['tarball', tar, tarBytes], ['directory', dir, fileBytes]] as const) {
    const m = await repeated(`debootstrap ${kind}`, async () => {
      const shaMs = kind === 'tarball' ? shMs(`sha256sum ${tar}`) : shaFilesMs(files);
      const podmanMs = (await podmanImport(tar)) ?? NaN;
      const copyMs = copyFloorMs(dir);
      await storeEmptied();
      clearCache(alice);
      clearCache(bob);
      const first = await imageAdd(alice, source, `deb-${kind}`);
      const afterFirst = objectFiles();
      // The same user again without the client's caches (a directory's digests, a tarball's scan): what they save, side by side.
      const uncached = await imageAdd(alice, source, `deb-${kind}`, ['--no-digest-cache']);
      const io0 = brokerIo();
      const same = await imageAdd(alice, source, `deb-${kind}`);
      // The bench measures the cache it means to: every file's digest, or the archive's scan, came from it.
      if (!(same.added.scanCache === 'hit' || (same.added.digestCache && same.added.digestCache.misses === 0))) throw new Error(`the same user's import again did not use the client's cache: ${JSON.stringify(same.added)}`);
      const io1 = brokerIo();
      const afterSame = objectFiles();
      const second = await imageAdd(bob, source, `deb-${kind}`);
      const io2 = brokerIo();
      const afterSecond = objectFiles();
      const sameWrites = storeWrites(afterFirst, afterSame);
      const secondWrites = storeWrites(afterSame, afterSecond);
      if (first.added.id !== same.added.id) throw new Error(`the same tree gave alice two images: ${first.added.id}, ${same.added.id}`);
      await imageRm(alice, first.added.id);
      await imageRm(bob, second.added.id);
      return {
        shaMs,
        podmanMs,
        copyMs,
        firstMs: first.ms,
        sameMs: same.ms,
        sameUncachedMs: uncached.ms,
        secondMs: second.ms,
        uploadedObjects: first.added.uploaded.objects,
        storedObjects: afterFirst.count,
        sameSentObjects: same.added.uploaded.objects,
        secondSentObjects: second.added.uploaded.objects,
        sameObjectsWritten: sameWrites.objects,
        sameObjectBytesWritten: sameWrites.bytes,
        sameWriteBytes: io1.writeBytes - io0.writeBytes,
        secondObjectsWritten: secondWrites.objects,
        secondObjectBytesWritten: secondWrites.bytes,
        secondWriteBytes: io2.writeBytes - io1.writeBytes,
        secondWchar: io2.wchar - io1.wchar,
      };
    });
    const label = `debootstrap ${kind} (${entries} entries, ${(bytes / MiB).toFixed(0)} MiB)`;
    const extra = { load1: m.load1, runs, objects: m.storedObjects };
    if (podmanMode !== 'absent') speedVsPodman.push({ ...row(T.podman, label, m.firstMs, m.podmanMs), podman: podmanMode, ...extra });
    else speedVsPodman.push({ ...row(T.podman, label, m.firstMs, null), podman: 'absent', ...extra });
    const mibs = (t: number) => bytes / MiB / (t / 1000);
    speedVsSha.push({ ...row(T.sha, `${label}: MiB/s`, mibs(m.firstMs), mibs(m.shaMs)), importMs: m.firstMs, sha256sumMs: m.shaMs, ...extra });
    // The tree's files, copied: one floor for the directory and the tarball (whose contents they are).
    if (kind === 'directory') floorRows.push({ ...row(T.floor, `${label}: MiB/s of \`cp -a\` + \`sync -f\` into the store's filesystem`, mibs(m.copyMs), mibs(m.shaMs)), copyMs: m.copyMs, sha256sumMs: m.shaMs, ...extra });
    againRows.push({ ...row(T.again, `${label}, again by the same user`, m.sameMs, m.shaMs), sentObjects: m.sameSentObjects, ...extra });
    againRows.push({ ...row(T.again, `${label}, again by the same user with --no-digest-cache (every byte read and hashed)`, m.sameUncachedMs, m.shaMs), sentObjects: m.sameSentObjects, ...extra });
    againRows.push({ ...row(T.again, `${label}, by a second user (proves possession: the broker hashes every object)`, m.secondMs, m.shaMs), sentObjects: m.secondSentObjects, ...extra });
    writtenRows.push({ ...row(T.written, `${label}, again by the same user`, m.sameObjectBytesWritten, null), objectsWritten: m.sameObjectsWritten, brokerWriteBytes: m.sameWriteBytes, ...extra });
    writtenRows.push({ ...row(T.written, `${label}, by a second user`, m.secondObjectBytesWritten, null), objectsWritten: m.secondObjectsWritten, brokerWriteBytes: m.secondWriteBytes, brokerWchar: m.secondWchar, ...extra });
    console.log(
      `debootstrap ${kind}: import ${(m.firstMs / 1000).toFixed(2)} s, podman import ${(m.podmanMs / 1000).toFixed(2)} s (${(m.firstMs / m.podmanMs).toFixed(2)}x), sha256sum ${(m.shaMs / 1000).toFixed(2)} s (throughput ${(m.shaMs / m.firstMs).toFixed(2)}x; the copy floor alone ${(m.copyMs / 1000).toFixed(2)} s, ${(m.shaMs / m.copyMs).toFixed(2)}x); ` +
        `again: same user ${(m.sameMs / 1000).toFixed(2)} s (${(m.sameMs / m.shaMs).toFixed(2)}x sha, ${m.sameSentObjects} sent; ${(m.sameUncachedMs / 1000).toFixed(2)} s with --no-digest-cache), second user ${(m.secondMs / 1000).toFixed(2)} s (${(m.secondMs / m.shaMs).toFixed(2)}x sha, ${m.secondSentObjects} sent); ` +
        `store objects/bytes written: same user ${m.sameObjectsWritten}/${m.sameObjectBytesWritten}, second ${m.secondObjectsWritten}/${m.secondObjectBytesWritten}; broker write_bytes: same ${m.sameWriteBytes}, second ${m.secondWriteBytes}; load ${m.load1}`,
    );
  }
}

async function smallCases(): Promise<void> {
  const { dir, tar } = smallTree();
  const entries = entriesOf(dir);
  const alice = world.users.alice!;
  const reference = `tar -C ${dir} -cf - . | sha256sum`;
  shMs(reference);
  for (const [kind, source] of [['tarball', tar], ['directory', dir]] as const) {
    const m = await repeated(`100k small files, ${kind}`, async () => {
      const refMs = shMs(reference);
      await storeEmptied();
      const first = await imageAdd(alice, source, `small-${kind}`);
      await imageRm(alice, first.added.id);
      return { refMs, importMs: first.ms, objects: first.added.uploaded.objects };
    }, smallRuns);
    const rate = (t: number) => entries / (t / 1000);
    smallRows.push({ ...row(T.small, `100,000 small files as a ${kind} (${entries} entries): entries/s`, rate(m.importMs), rate(m.refMs)), importMs: m.importMs, referenceMs: m.refMs, objects: m.objects, load1: m.load1, runs: smallRuns });
    console.log(`100k small files, ${kind}: import ${(m.importMs / 1000).toFixed(2)} s = ${rate(m.importMs).toFixed(0)} entries/s; \`tar -c | sha256sum\` ${(m.refMs / 1000).toFixed(2)} s = ${rate(m.refMs).toFixed(0)} entries/s (${(m.refMs / m.importMs).toFixed(2)}x); load ${m.load1}`);
  }
}

/** Writes what was measured so far (a later case that fails keeps the earlier ones). */
function save(): void {
  const targets = [
    { ...T.podman, rows: speedVsPodman },
    { ...T.sha, rows: speedVsSha },
    { ...T.floor, rows: floorRows },
    { ...T.again, rows: againRows },
    { ...T.written, rows: writtenRows },
    { ...T.small, rows: smallRows },
  ].filter((t) => t.rows.length > 0);
  console.log(`wrote ${writeResult({ bench: 'import', targets, series: [] })}`);
}

try {
  console.log(`import bench: ${runs} run(s) per case, load average at start ${readFileSync('/proc/loadavg', 'utf8').trim()}`);
  if (cases.includes('deb')) {
    await choosePodman();
    await debootstrapCases();
    save();
  }
  if (cases.includes('small')) {
    await smallCases();
    save();
  }
} finally {
  await world.teardown();
}
console.log(`load average at the end: ${readFileSync('/proc/loadavg', 'utf8').trim()}`);
