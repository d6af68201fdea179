// The broker side of one PutObjects alone, without D-Bus, users or SQLite:
// an upload helper (dist/src/broker/upload-helper.js, as the front starts
// it) fed a tree's files as fds by the client's own sender, its batches
// published by rename as the store does, against sha256sum over the same
// files in the same run. It reports the helper's CPU time (user, system)
// (from its call to its last answer; its start-up, which a spare
// helper does ahead of the call, is not counted) besides the wall time, which on a shared machine says more than the wall
// time: a first upload (the store lacks every object) and a hash-only one (a
// second user). Writes no results file (not part of the suite).
//   sudo bash bench/run.sh upload-helper-probe [--tree /usr/share/icons] [--runs 3] [--stores-in DIR] [--wrap 'strace -f -c -o /tmp/out']
//     [--prove] [--cold] [--nice N] [--node-flags '--no-opt']
// (--wrap: the first run's first upload runs its helper under that command; no CPU figures then)
import { execFileSync, spawn } from 'node:child_process';
import { constants, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { getPriority, loadavg, setPriority } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Channel } from '../src/broker/channel.js';
import { manifestFromDirectory, sendObjects, UNCLAIMED_DIGEST, type OutgoingObject } from '../src/client/images.js';
import { objectPath } from '../src/composefs/format.js';
import { socketpair } from '../src/sys/syscalls.js';


function perfCallArg(): boolean {
  return process.argv.includes('--perf-call');
}
const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : dflt;
};
const tree = arg('--tree', '/usr/share/icons');
/** Where the stores go (e.g. a journaled ext4 mounted for the purpose, to compare filesystems). */
const storesIn = arg('--stores-in', '/var/tmp');
const runs = Number(arg('--runs', '3'));
const wrap = perfCallArg() ? 'perf' : arg('--wrap', '');
/** Which upload of the first run --wrap applies to. */
const wrapWhich = arg('--wrap-upload', 'first');
/** perf-record the helper from its call to its last answer (the wrapped upload) into this file. */
const perfCall = arg('--perf-call', '');
const extraFlags = arg('--node-flags', '').split(' ').filter(Boolean);
/** Each upload's tmp files in a new subdirectory of a tmp/ marked +T (ext4's Orlov allocator then spreads it to a little-used block group). */
const topdir = process.argv.includes('--topdir');
/** The call sent as soon as the helper is started (as ProveObjects' helper is, with no spare), not after a second: its start-up counts. */
const cold = process.argv.includes('--cold');
/** ProveObjects' records (no digest claimed; the helper copies what the store lacks, and says which it has) instead of PutObjects'. */
const prove = process.argv.includes('--prove');
/** The helper's nice value above ours (the front starts its helpers at node-flags.ts's helperNice). */
const nice = Number(arg('--nice', '0'));
let uploads = 0;
/** Another build's helper (--helper path/to/upload-helper.js), to compare two builds in one run. */
const helperPath = arg('--helper', new URL('../dist/src/broker/upload-helper.js', import.meta.url).pathname);

const built = await manifestFromDirectory(tree);
const objects = [...built.manifest.entries.flatMap((e) => (e.type === 'file' && e.digest ? [[e.digest, e.size] as const] : []))];
const unique = new Map<string, number>(objects);
const todo = [...unique].flatMap(([digest, size]) => {
  const path = built.sources.get(digest);
  return typeof path === 'string' ? [{ digest, size, path }] : [];
});
const bytes = todo.reduce((n, o) => n + o.size, 0);

function sha256sumMs(): number {
  const list = `/tmp/mountgate-probe-list-${process.pid}`;
  writeFileSync(list, `${todo.map((o) => o.path).join('\0')}\0`);
  const t0 = performance.now();
  execFileSync('sh', ['-c', `xargs -0 -n 2000 sha256sum < ${list} > /dev/null`]);
  const ms = performance.now() - t0;
  rmSync(list);
  return ms;
}

/** The helper's CPU so far (ms, in 10 ms ticks), from /proc: user and system of all its threads. */
function cpuOf(pid: number): { user: number; sys: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(f[11]) * 10, sys: Number(f[12]) * 10 };
}

async function upload(store: string, present: boolean, wrapper?: string): Promise<{ ms: number; user: number; sys: number }> {
  const prefix = `probe${uploads++}`;
  let tmp = join(store, 'tmp');
  if (topdir) {
    tmp = join(tmp, prefix);
    mkdirSync(tmp);
  }
  const [ours, theirs] = socketpair();
  const [streamOurs, streamTheirs] = socketpair();
  const cmd = wrapper && wrapper !== 'perf' ? [...wrapper.split(' '), process.execPath] : [process.execPath];
  const child = spawn(cmd[0]!, [...cmd.slice(1), '--max-old-space-size=256', ...extraFlags, helperPath, tmp, '60000'], { stdio: ['pipe', 'pipe', 'inherit', theirs], env: { MALLOC_ARENA_MAX: '2' } });
  const channel = new Channel(ours);
  if (nice) setPriority(child.pid!, getPriority() + nice);
  // Let it start its threads, as a spare does before its call comes (--cold: no time for that).
  if (!cold) await new Promise((r) => setTimeout(r, 1000));
  const recorder = wrapper === 'perf' ? spawn('perf', ['record', '-q', '-g', '-F', '1999', '-p', String(child.pid), '-o', perfCall], { stdio: 'inherit' }) : undefined;
  if (recorder) await new Promise((r) => setTimeout(r, 500));
  const before = cpuOf(child.pid!);
  const t0 = performance.now();
  await channel.send({ type: 'call', prefix, kind: 'socket' }, [streamTheirs]);
  child.stdin!.write(`${JSON.stringify(prove ? { prove: { bytes: 2 ** 50, records: 10_000_000 } } : { pending: todo.map((o) => [o.digest, o.size, present]) })}\n`);
  let cpu = { user: 0, sys: 0 };
  const answered = new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (text) => {
      const line = JSON.parse(text) as Record<string, unknown>;
      if (Array.isArray(line.b)) {
        for (const [digest, , name] of line.b as [string, number, string | null][]) if (name) renameSync(join(tmp, name), join(store, 'objects', objectPath(digest)));
      } else if (line.end) child.stdin!.write('sync\n');
      else if (line.synced) {
        const after = cpuOf(child.pid!);
        cpu = { user: after.user - before.user, sys: after.sys - before.sys };
        recorder?.kill('SIGINT');
        resolve();
      } else if (typeof line.e === 'string') reject(new Error(line.e));
    });
    child.once('exit', (code) => reject(new Error(`helper exited ${code}`)));
  });
  let at = 0;
  const next = async (room: { records: number }): Promise<OutgoingObject[] | undefined> => {
    if (at >= todo.length) return undefined;
    const group = todo.slice(at, at + room.records);
    at += group.length;
    return group.map((o) => ({ digest: prove ? UNCLAIMED_DIGEST : o.digest, size: o.size, fd: openSync(o.path, constants.O_RDONLY | constants.O_NOFOLLOW) }));
  };
  await sendObjects(streamOurs, next, () => undefined, answered);
  const ms = performance.now() - t0;
  child.stdin!.end();
  await new Promise((r) => child.once('exit', r));
  if (recorder && recorder.exitCode === null) await new Promise((r) => recorder.once('exit', r));
  channel.close();
  // What the front's dropTmp does after every call.
  for (const f of readdirSync(tmp)) if (f.startsWith(`${prefix}.`)) rmSync(join(tmp, f), { recursive: true, force: true });
  return { ms, ...cpu };
}

// As the installed units run the broker (UMask=0077): the objects must still be 0444.
process.umask(0o077);
console.log(`${tree}: ${todo.length} objects, ${(bytes / 2 ** 20).toFixed(1)} MiB; load ${loadavg()[0]!.toFixed(1)}`);
sha256sumMs();
for (let run = 0; run < runs; run++) {
  const store = mkdtempSync(join(storesIn, 'mountgate-probe-store.'));
  try {
    mkdirSync(join(store, 'tmp'));
    if (topdir) execFileSync('chattr', ['+T', join(store, 'tmp')]);
    for (let i = 0; i < 256; i++) mkdirSync(join(store, 'objects', i.toString(16).padStart(2, '0')), { recursive: true });
    const sha = sha256sumMs();
    const first = await upload(store, false, run === 0 && wrap && wrapWhich === 'first' ? wrap : undefined);
    const modes = new Set(todo.slice(0, 100).map((o) => (statSync(join(store, 'objects', objectPath(o.digest))).mode & 0o7777).toString(8)));
    if (modes.size !== 1 || !modes.has('444')) throw new Error(`published objects have modes ${[...modes].join(', ')}, not 444`);
    const second = await upload(store, true, run === 0 && wrap && wrapWhich === 'second' ? wrap : undefined);
    console.log(
      `run ${run + 1}: sha256sum ${sha.toFixed(0)} ms | first ${first.ms.toFixed(0)} ms (cpu user ${first.user} sys ${first.sys}), ratio ${(sha / first.ms).toFixed(2)} | ` +
        `hash only ${second.ms.toFixed(0)} ms (cpu user ${second.user} sys ${second.sys}), ratio ${(sha / second.ms).toFixed(2)} | load ${loadavg()[0]!.toFixed(1)}`,
    );
  } finally {
    rmSync(store, { recursive: true, force: true });
  }
}
