// Load and soak of the real broker (executor and front) on a private bus with
// the production bus policy, from real unprivileged users.
//   sudo bash bench/run.sh load [SECONDS] [USERS] [--nice N]   16 users (one of them
//        flooding past its limit, the others at it) keep hundreds of mixed calls in
//        flight (Explain, BindIdmapped, AddImage+PutObjects, MountImage) while an
//        observer times GetInfo; the observer's latency with no load, measured first
//        in the same run, is the baseline. Reports failures, latencies, the broker's
//        memory and fds (at rest = after a warm-up call of each user), the front's CPU
//        and run-queue time, and what is left afterwards; prints PASS or FAIL against
//        issue 7's target and writes the figures to bench/results/load.json. --nice N
//        runs the loading users' processes at nice N (the broker, the bus and the observer at 0), as the
//        service's slice outweighs the users' under systemd.
//   sudo bash bench/run.sh load --soak [CYCLES]     CYCLES x (MountImage + BindIdmapped)
//        with every fd closed: fds, loop devices and staging mounts back where they were.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { helperIdleMs } from '../src/broker/idle-pool.js';
import { createWorld } from '../test/helpers/world.js';
import { runAs } from '../test/helpers/run-as.js';
import { pkgRoot } from '../test/helpers/paths.js';

/**
 * --nice N: the loading users' processes run at nice N (the broker and the bus at 0), as a system
 * service's slice outweighs the users' in production. The observer is not niced: in production it is
 * a user of its own, whose slice gets its share however many processes the flooding users run.
 */
const niceAt = process.argv.indexOf('--nice');
const nice = niceAt >= 0 ? Number(process.argv.splice(niceAt, 2)[1]) : 0;
const soak = process.argv[2] === '--soak';
const args = process.argv.slice(soak ? 3 : 2);
const seconds = soak ? 0 : Number(args[0] ?? 30);
const cycles = soak ? Number(args[0] ?? 2000) : 0;
const userCount = soak ? 1 : Number(args[1] ?? 16);
const client = join(pkgRoot, 'bench', 'load-client.mjs');

const users: Record<string, Record<string, never>> = { observer: {} };
for (let k = 0; k < userCount; k++) users[`u${k}`] = {};
const methods = Object.fromEntries(['BindIdmapped', 'Explain', 'AddImage', 'PutObjects', 'MountImage', 'ListImages', 'RemoveImage'].map((m) => [m, { users: ['*'] }]));
/** Calls in flight per user that the policy allows; the well-behaved users keep exactly that many in flight, the flooder 8 times as many. */
const limit = 8;
const floodInFlight = 64;
/** The target (issue 7): one user's flood does not raise another's p99 above this. */
const targetMs = 50;
const world = await createWorld({ users, policy: { version: 1, methods, limits: { concurrentRequests: limit, requestsPerMinute: 1_000_000 } }, brokerArgs: ['--erofs-backing', 'loop'] });

/** The broker's process tree: the executor, the front and their helpers. */
function tree(pid: number): number[] {
  const out = [pid];
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const kids = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
      for (const k of kids ? kids.split(' ') : []) out.push(...tree(Number(k)));
    }
  } catch {
    // gone meanwhile
  }
  return out;
}
const sum = (f: (pid: number) => number) => tree(world.broker.pid).reduce((n, p) => n + f(p), 0);
const rssMiB = () => sum((p) => { try { return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? 0) / 1024; } catch { return 0; } });
const fds = () => sum((p) => { try { return readdirSync(`/proc/${p}/fd`).length; } catch { return 0; } });
/** What each fd of the broker's tree points at, "pid comm: target" (for what a run left behind). */
const fdTargets = () =>
  tree(world.broker.pid).flatMap((p) => {
    try {
      const comm = readFileSync(`/proc/${p}/comm`, 'utf8').trim();
      return readdirSync(`/proc/${p}/fd`).map((fd) => {
        try {
          return `${p} ${comm}: ${readlinkSync(`/proc/${p}/fd/${fd}`).replace(/\d+/g, 'N')}`;
        } catch {
          return `${p} ${comm}: ?`;
        }
      });
    } catch {
      return [];
    }
  });
const fdDiff = (before: string[], after: string[]) => {
  const count = (xs: string[]) => xs.reduce((m, x) => m.set(x, (m.get(x) ?? 0) + 1), new Map<string, number>());
  const a = count(before);
  const out: string[] = [];
  for (const [k, n] of count(after)) if (n > (a.get(k) ?? 0)) out.push(`${k} +${n - (a.get(k) ?? 0)}`);
  for (const [k, n] of a) if (!after.includes(k)) out.push(`${k} -${n}`);
  return out;
};
const loops = () => execFileSync('losetup', ['-a'], { encoding: 'utf8' }).split('\n').filter(Boolean).length;
/** The points staged in the lock helper's namespace (its root, seen through /proc): 0 between binds. */
const staged = () => {
  const stage = tree(world.broker.pid).find((p) => { try { return readFileSync(`/proc/${p}/cmdline`, 'utf8').startsWith('mountgate-lock-stage'); } catch { return false; } });
  return stage === undefined ? -1 : readdirSync(`/proc/${stage}/root`).length;
};
/** The front: the executor's child running front.js. */
const frontPid = () => tree(world.broker.pid).find((p) => { try { return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('front.js'); } catch { return false; } });
/** A process's main thread: CPU time (user+system) and time it waited on a run queue for a CPU, in ms (/proc/PID/schedstat). */
function sched(pid: number | undefined): { cpu: number; wait: number } {
  try {
    const [cpu, wait] = readFileSync(`/proc/${pid}/schedstat`, 'utf8').trim().split(' ').map(Number);
    return { cpu: cpu! / 1e6, wait: wait! / 1e6 };
  } catch {
    return { cpu: NaN, wait: NaN };
  }
}
const q = (xs: number[], p: number) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]! : NaN);
type Stats = { n: number; p50: number; p90: number; p99: number; max: number };
type Out = { latencies: Record<string, Stats>; failures: Record<string, number>; refusals: Record<string, number> };
const run = async (name: string, argv: string[]): Promise<Out> => {
  const r = await runAs(world.users[name]!, [...(nice && name !== 'observer' ? ['nice', '-n', String(nice)] : []), process.execPath, client, ...argv], { busAddress: world.bus.address, env: { MOUNTGATE_TEST_PKG: pkgRoot }, timeoutMs: 3_600_000 });
  if (r.code !== 0) throw new Error(`${name}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Out;
};

try {
  const start = { fds: fds(), rss: rssMiB(), loops: loops() };
  if (soak) {
    // One warm-up cycle first: the userns cache keeps one namespace fd per distinct map.
    await run('u0', ['soak', '1', world.dirs.u0!]);
    await new Promise((res) => setTimeout(res, 500));
    Object.assign(start, { fds: fds(), rss: rssMiB(), loops: loops() });
    const t0 = Date.now();
    const out = await run('u0', ['soak', String(cycles), world.dirs.u0!]);
    await new Promise((res) => setTimeout(res, 1000));
    const s = (Date.now() - t0) / 1000;
    console.log(`soak: ${cycles} x (MountImage + BindIdmapped) in ${s.toFixed(1)} s (${((2 * cycles) / s).toFixed(1)} calls/s)`);
    for (const [kind, x] of Object.entries(out.latencies)) console.log(`  ${kind.padEnd(12)} median ${x.p50.toFixed(2)} ms  p99 ${x.p99.toFixed(2)} ms  (${x.n})`);
    console.log(`  failures: ${JSON.stringify(out.failures)}  refusals: ${JSON.stringify(out.refusals)}`);
    console.log(`  broker fds after warm-up: ${start.fds} -> ${fds()}; loop devices: ${start.loops} -> ${loops()}; staging points left: ${staged()}; RSS ${start.rss.toFixed(0)} -> ${rssMiB().toFixed(0)} MiB`);
  } else {
    // A warm-up: each user binds and mounts once (the userns cache keeps one namespace fd per
    // distinct map, the store its objects); what the broker holds then is "at rest".
    await Promise.all(Object.keys(users).filter((u) => u !== 'observer').map((u) => run(u, ['soak', '1', world.dirs[u]!])));
    await new Promise((res) => setTimeout(res, 1000));
    Object.assign(start, { fds: fds(), rss: rssMiB(), loops: loops() });
    const restingFds = fdTargets();
    const idle = await run('observer', ['observer', '5']);
    const front = frontPid();
    const s0 = { front: sched(front), bus: sched(world.bus.pid), t: Date.now() };
    let peak = start.rss;
    let peakFds = start.fds;
    const sampler = setInterval(() => {
      peak = Math.max(peak, rssMiB());
      peakFds = Math.max(peakFds, fds());
    }, 200);
    // What the front's main thread is doing, sampled: state and, when asleep, the syscall it sleeps in.
    const states: Record<string, number> = {};
    const stateSampler = setInterval(() => {
      try {
        const st = readFileSync(`/proc/${front}/stat`, 'utf8');
        const state = st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3);
        const call = readFileSync(`/proc/${front}/syscall`, 'utf8').trim().split(' ');
        const key = state === 'R' ? 'R' : `${state} syscall ${call[0]} arg0 ${Number(call[1])}`;
        states[key] = (states[key] ?? 0) + 1;
      } catch {
        // gone
      }
    }, 10);
    console.log(`load starts ${new Date().toISOString()}`);
    const loaded = await Promise.all([
      run('observer', ['observer', String(seconds)]),
      ...Object.keys(users)
        .filter((u) => u !== 'observer')
        .map((u, k) => run(u, ['mixed', String(seconds), String(k === 0 ? floodInFlight : limit), world.dirs[u]!])),
    ]);
    clearInterval(sampler);
    clearInterval(stateSampler);
    console.log(`front main thread states (10 ms samples): ${JSON.stringify(Object.entries(states).sort((a, b) => b[1] - a[1]).slice(0, 8))}`);
    console.log(`load ends ${new Date().toISOString()}`);
    const s1 = { front: sched(front), bus: sched(world.bus.pid), t: Date.now() };
    await new Promise((res) => setTimeout(res, 2000));
    const [observer, ...mixed] = loaded;
    const base = idle.latencies.GetInfo!.p50;
    const seen = observer!.latencies.GetInfo!;
    console.log(`load: ${userCount} users for ${seconds} s (u0 floods with ${floodInFlight} calls in flight, the others keep ${limit} each, the limit per user)${nice ? `; the users run at nice ${nice}` : ''}`);
    console.log(`observer GetInfo: idle median ${base.toFixed(2)} ms (baseline); under load median ${seen.p50.toFixed(2)} ms, p99 ${seen.p99.toFixed(2)} ms, max ${seen.max.toFixed(1)} ms (p99 / baseline ${(seen.p99 / base).toFixed(1)}x)`);
    const failures: Record<string, number> = {};
    const refusals: Record<string, number> = {};
    let othersRefused = 0;
    const kinds: Record<string, { n: number; p50: number[]; p99: number[] }> = {};
    mixed.forEach((m, k) => {
      for (const [kind, x] of Object.entries(m!.latencies)) {
        const e = (kinds[kind] ??= { n: 0, p50: [], p99: [] });
        e.n += x.n;
        e.p50.push(x.p50);
        if (k > 0) e.p99.push(x.p99);
      }
      for (const [n, c] of Object.entries(m!.failures)) failures[n] = (failures[n] ?? 0) + c;
      const who = k === 0 ? 'flooder' : 'others';
      for (const [n, c] of Object.entries(m!.refusals)) refusals[`${who} ${n}`] = (refusals[`${who} ${n}`] ?? 0) + c;
      if (k > 0) othersRefused += Object.values(m!.refusals).reduce((a, b) => a + b, 0);
    });
    for (const [kind, e] of Object.entries(kinds)) console.log(`  ${kind.padEnd(12)} ${String(e.n).padStart(6)} calls  median of users' medians ${q(e.p50, 0.5).toFixed(1)} ms  worst well-behaved user's p99 ${Math.max(...e.p99).toFixed(1)} ms`);
    console.log(`  failures (not refusals): ${JSON.stringify(failures)}`);
    console.log(`  refusals: ${JSON.stringify(refusals)}`);
    // Helpers the load started (fd probers, build helpers) are let go once idle (src/broker/idle-pool.ts): "after" is once they are.
    for (const end = Date.now() + helperIdleMs + 5000; fds() > start.fds && Date.now() < end;) await new Promise((res) => setTimeout(res, 200));
    console.log(`  broker tree RSS: ${start.rss.toFixed(0)} MiB at rest, ${peak.toFixed(0)} MiB peak, ${rssMiB().toFixed(0)} MiB after; fds ${start.fds} at rest, ${peakFds} peak, ${fds()} after`);
    const wall = s1.t - s0.t;
    console.log(`  front main thread: on CPU ${(s1.front.cpu - s0.front.cpu).toFixed(0)} ms, waiting for a CPU ${(s1.front.wait - s0.front.wait).toFixed(0)} ms, of ${wall} ms; bus daemon on CPU ${(s1.bus.cpu - s0.bus.cpu).toFixed(0)} ms, waiting ${(s1.bus.wait - s0.bus.wait).toFixed(0)} ms`);
    console.log(`  loop devices: ${start.loops} -> ${loops()}; staging points left: ${staged()}; store/tmp entries: ${readdirSync(join(world.broker.stateDir, 'store', 'tmp')).length}`);
    const grown = fdDiff(restingFds, fdTargets());
    if (grown.length) console.log(`  fds changed since at rest: ${grown.slice(0, 12).join('; ')}`);
    const failed = Object.values(failures).reduce((a, b) => a + b, 0);
    const after = { fds: fds(), rss: rssMiB() };
    const row = (name: string, value: number, pass: boolean) => ({ case: name, mountgate: Number(value.toFixed(2)), reference: null, ratio: null, pass });
    const targets = [
      { target: "fair service: one user's flood does not raise another's p99 above 50 ms", limit: targetMs, unit: 'ms', rows: [row('observer GetInfo p99', seen.p99, seen.p99 <= targetMs)] },
      { target: 'no failure (the flooder\'s own limit refusals aside)', limit: 0, unit: 'calls', rows: [row('failed calls, all users', failed, failed === 0), row("well-behaved users' refused calls", othersRefused, othersRefused === 0)] },
      { target: 'no fd growth', limit: 0, unit: 'fds', rows: [row('broker tree fds after the load minus at rest', after.fds - start.fds, after.fds <= start.fds)] },
      { target: 'bounded memory (the unit allows MemoryMax=6G)', limit: 6144, unit: 'MiB', rows: [row('broker tree RSS peak', peak, peak <= 6144)] },
    ];
    const pass = targets.every((t) => t.rows.every((r) => r.pass));
    mkdirSync(join(pkgRoot, 'bench', 'results'), { recursive: true });
    const config = `${userCount} users, ${seconds} s, users at nice ${nice}`;
    writeFileSync(join(pkgRoot, 'bench', 'results', 'load.json'), `${JSON.stringify({ bench: 'load', date: new Date().toISOString(), config, targets, series: [] }, null, 2)}\n`);
    console.log(`${pass ? 'PASS' : 'FAIL'}: observer GetInfo p99 ${seen.p99.toFixed(1)} ms (target <= ${targetMs} ms), ${failed} failed calls, ${othersRefused} refusals of well-behaved users, fds ${start.fds} -> ${after.fds}, RSS peak ${peak.toFixed(0)} MiB (${config}; bench/results/load.json)`);
  }
  const errors = world.broker.audit.filter((l) => l.event === 'error');
  console.log(`broker errors logged: ${errors.length}`);
  for (const e of errors.slice(0, 5)) console.log(`  ${String(e.message).split('\n').slice(0, 3).join(' | ')}`);
  const stderr = world.broker.stderr().trim();
  if (stderr) console.log(`broker stderr (last lines):\n${stderr.split('\n').slice(-8).join('\n')}`);
} finally {
  await world.teardown();
  for (const stop of world.broker.audit.filter((l) => l.event === 'stop' && l.eventLoopDelayMs)) {
    console.log(`${stop.process === 'executor' ? 'executor' : 'front'} event loop delay (ms): ${JSON.stringify(stop.eventLoopDelayMs)}; worst stalls: ${JSON.stringify(stop.stalls)}`);
  }
}
