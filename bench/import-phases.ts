// Where an import of the debootstrap tree spends its time, split by phase
// (the client's MOUNTGATE_TRACE_STARTUP marks: modules loaded, manifest built
// or archive read, AddImage answered, uploaded), with syscall counts
// (strace -c -f, when installed) and, with PROBE_PROF=1, a CPU profile of
// each client (--cpu-prof, into $PROBE_OUT): figures that depend less on the
// machine's load than the times do. Runs: alice's first import, alice again
// (digest cache, then --no-digest-cache for a directory), a second user, a
// third under strace. Uses the trees `bench import` builds; writes no
// results (not part of the suite).
//   sudo bash bench/run.sh import-phases [dir|tar]
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { createWorld } from '../test/helpers/world.js';
import { runAs } from '../test/helpers/run-as.js';
import { pkgRoot } from '../test/helpers/paths.js';
import type { TestUser } from '../test/helpers/users.js';
import type { Policy } from '../src/schema/types.generated.js';

const kind = process.argv[2] ?? 'dir';
const source = kind === 'dir' ? '/var/tmp/mountgate-bench/bookworm-minbase' : '/var/tmp/mountgate-bench/bookworm-minbase.tar';
if (!existsSync(source)) throw new Error(`${source} is missing: run \`bench/run.sh import --cases deb\` once to build it`);
/** PROBE_PROF=DIR: a CPU profile of each client into DIR (kept; the counts go to standard output). */
const profDir = process.env.PROBE_PROF;
if (profDir) {
  mkdirSync(profDir, { recursive: true });
  chmodSync(profDir, 0o1777); // the test users write their profiles here
}
const strace = spawnSync('strace', ['-V']).status === 0;
const cli = join(pkgRoot, 'bin', 'mountgate');
const all = { users: ['*'] };
const policy: Policy = {
  version: 1,
  methods: { AddImage: all, PutObjects: all, ProveObjects: all, MountImage: all, ListImages: all, RemoveImage: all },
  limits: { concurrentRequests: 8, requestsPerMinute: 1_000_000 },
  images: { maxEntriesPerImage: 2_000_000, maxBytesPerUser: 2 ** 50, maxManifestBytes: 500_000_000 },
};
const world = await createWorld({ users: { alice: {}, bob: {}, carol: {} }, policy });
const load1 = () => readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
/** CPU the whole machine spent (ms, from /proc/stat's ticks): during an import, the client's, the broker's and the bus daemon's together. */
function machineCpuMs(): number {
  const [, ...ticks] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).map(Number);
  const idle = ticks[3]! + ticks[4]!;
  return (ticks.slice(0, 8).reduce((a, b) => a + b, 0) - idle) * 10;
}
/** The user's XDG_CACHE_HOME (a test user's HOME does not exist). */
function cacheOf(user: TestUser): string {
  const dir = join(world.scratch, `cache-${user.uid}`);
  mkdirSync(dir, { recursive: true });
  chownSync(dir, user.uid, user.gid);
  return dir;
}
async function add(user: TestUser, label: string, pre: string[] = [], extra: string[] = []) {
  const cacheDir = cacheOf(user);
  const cpu0 = machineCpuMs();
  const t0 = performance.now();
  const r = await runAs(user, [...pre, process.execPath, ...(profDir ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`, `--cpu-prof-name=${kind}-${label}-${process.pid}.cpuprofile`] : []), cli, 'image', 'add', source, '--name', 'deb', '--json', ...extra], { busAddress: world.bus.address, env: { MOUNTGATE_TRACE_STARTUP: '1', XDG_CACHE_HOME: cacheDir }, timeoutMs: 600_000 });
  const ms = performance.now() - t0;
  const machineCpu = machineCpuMs() - cpu0;
  if (r.code !== 0) throw new Error(r.stderr);
  const marks = r.stderr.split('\n').filter((l) => l.includes('trace')).map((l) => l.replace('mountgate: trace ', '')).join(' | ');
  console.log(`${kind} ${label}: ${ms.toFixed(0)} ms (load ${load1()}, machine cpu ${machineCpu} ms): ${marks} :: ${r.stdout.trim().slice(-80)}`);
}
try {
  const [alice, bob, carol] = [world.users.alice!, world.users.bob!, world.users.carol!];
  await add(alice, 'first');
  for (let i = 0; i < 3; i++) await add(alice, `same${i}`);
  for (let i = 0; i < 2; i++) await add(alice, `same-nocache${i}`, [], ['--no-digest-cache']);
  // The counts go to the user's own directory (removed with the world), then here.
  const traced = async (user: TestUser, label: string) => {
    const file = join(cacheOf(user), 'strace');
    await add(user, label, ['strace', '-c', '-f', '-o', file]);
    console.log(readFileSync(file, 'utf8').split('\n').slice(0, 16).join('\n'));
  };
  if (strace) await traced(alice, 'same-strace');
  await add(bob, 'second');
  if (strace) await traced(carol, 'second-strace');
} finally {
  await world.teardown();
}
