// The adversarial test world: the shared test world (private bus with the
// production bus policy, real broker, real users) plus what every hostile case
// asserts afterwards: nothing mounted, nothing stored, the broker tree's fds
// back to their baseline, and another user answered quickly.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createWorld, type World, type WorldSpec } from '../../helpers/world.js';
import { startBroker } from '../../helpers/broker.js';
import { runAs, type RunResult } from '../../helpers/run-as.js';
import { pkgRoot } from '../../helpers/paths.js';
import type { TestUser } from '../../helpers/users.js';
import { helperIdleMs } from '../../../src/broker/idle-pool.js';
import { fdsBackTo, imageMounts, treeFds, treePids } from './broker-tree.js';

export const probe = join(pkgRoot, 'test', 'helpers', 'probe-client.mjs');
export const cli = join(pkgRoot, 'bin', 'mountgate');
export const errorName = (name: string) => `org.mountgate.Error.${name}`;

export type Reply = { ok: boolean; ms?: number; name?: string; message?: string; messageLength?: number; body?: unknown[]; info?: Record<string, unknown>; [k: string]: unknown };

/** Everything under dir, as "relative/path size" lines (the broker's state must not change on a refusal). */
export function listing(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = statSync(p);
      if (st.isDirectory()) walk(p, `${rel}${name}/`);
      // The store database changes size with every transaction (and its WAL is checkpointed when SQLite likes): what it holds is checked through the broker.
      else if (/^store\.db(-wal|-journal)?$/.test(name)) out.push(`${rel}${name}`);
      else out.push(`${rel}${name} ${st.size}`);
    }
  };
  walk(dir, '');
  return out;
}

export interface Snapshot {
  fds: number;
  state: string[];
  mounts: string[];
}

export interface AdvWorld extends World {
  /** Runs the probe client as user with ops; wrap is an argv prefix (e.g. unshare); lines that are not JSON are errors. */
  probeAs(user: TestUser, ops: unknown[], opts?: { wrap?: string[]; timeoutMs?: number; env?: Record<string, string> }): Promise<Reply[]>;
  /** The probe as a long-running process (its stdout streamed). */
  spawnProbe(user: TestUser, ops: unknown[], opts?: { wrap?: string[] }): SpawnedAs;
  snapshot(): Snapshot;
  /** Asserts the broker tree is where snapshot() found it: fds, state dir, image mounts. */
  nothingLeft(tt: Tap.Test, before: Snapshot, opts?: { fdTimeoutMs?: number; stateMayChange?: boolean }): Promise<void>;
  /** Asserts that `user` is answered GetInfo within maxMs. */
  served(tt: Tap.Test, user: TestUser, label?: string, maxMs?: number): Promise<void>;
  brokerFds(): number;
  /** If an earlier case killed the broker, starts a new one on the same state (so later cases still test something); true if it did. */
  restartIfDead(tt: Tap.Test): Promise<boolean>;
  /** SIGKILLs the broker's whole process tree and unmounts anything left under its directory. */
  killBroker(): Promise<void>;
}

export interface SpawnedAs {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves when stdout (or stderr) matches. */
  waitOutput(re: RegExp, timeoutMs?: number): Promise<void>;
  done: Promise<RunResult>;
  kill(): void;
}

/** A program as user, kept running, with its output streamed (runAs waits for the end). */
export function spawnAs(user: TestUser, argv: string[], busAddress?: string): SpawnedAs {
  const child = spawn('env', ['-u', 'NODE_OPTIONS', ...argv], {
    uid: user.uid,
    gid: user.gid,
    cwd: '/',
    env: { PATH: '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin', HOME: '/nonexistent', USER: user.name, LANG: 'C.UTF-8', ...(busAddress ? { MOUNTGATE_BUS_ADDRESS: busAddress } : {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // its own process group: kill() ends the whole script
  });
  let out = '';
  let err = '';
  const waiters: (() => void)[] = [];
  const poke = () => waiters.splice(0).forEach((w) => w());
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); poke(); });
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); poke(); });
  const done = new Promise<RunResult>((res) => child.once('close', (code, signal) => { poke(); res({ code, signal, stdout: out, stderr: err }); }));
  const waitOutput = async (re: RegExp, timeoutMs = 15_000) => {
    const end = Date.now() + timeoutMs;
    while (!re.test(out) && !re.test(err)) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`exited before ${re}: ${out} ${err}`);
      if (Date.now() > end) throw new Error(`no ${re} within ${timeoutMs} ms: ${out} ${err}`);
      await new Promise<void>((r) => { waiters.push(r); setTimeout(r, 200); });
    }
  };
  const kill = () => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  return { child, stdout: () => out, stderr: () => err, waitOutput, done, kill };
}

/** Waits until user runs no process named `name` (pgrep -x); returns what is left. */
export async function processesLeft(user: TestUser, name: string, timeoutMs = 5000): Promise<string> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const left = spawnSync('pgrep', ['-u', String(user.uid), '-x', name], { encoding: 'utf8' }).stdout.trim();
    if (left === '' || Date.now() > end) return left;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Lazily unmounts every mount at or below dir (deepest first). */
export function unmountUnder(dir: string): void {
  const points = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m === dir || m.startsWith(`${dir}/`));
  for (const m of points.sort().reverse()) spawnSync('umount', ['-l', m]);
}

export function parseLines(text: string): Reply[] {
  return text.trim().split('\n').filter(Boolean).map((l) => {
    try {
      return JSON.parse(l) as Reply;
    } catch {
      return { ok: false, name: 'probe-output', message: l };
    }
  });
}

export async function createAdvWorld(spec: WorldSpec): Promise<AdvWorld> {
  const world = await createWorld(spec);
  const adv: AdvWorld = Object.assign(world, {
    async probeAs(user: TestUser, ops: unknown[], opts: { wrap?: string[]; timeoutMs?: number; env?: Record<string, string> } = {}) {
      const r = await runAs(user, [...(opts.wrap ?? []), process.execPath, probe, JSON.stringify(ops)], { busAddress: world.bus.address, timeoutMs: opts.timeoutMs ?? 60_000, ...(opts.env ? { env: opts.env } : {}) });
      if (r.code !== 0) throw new Error(`probe failed (${r.code ?? r.signal}): ${r.stderr.slice(0, 2000)}`);
      return parseLines(r.stdout);
    },
    spawnProbe(user: TestUser, ops: unknown[], opts: { wrap?: string[] } = {}) {
      return spawnAs(user, [...(opts.wrap ?? []), process.execPath, probe, JSON.stringify(ops)], world.bus.address);
    },
    brokerFds: () => treeFds(world.broker.pid),
    async killBroker() {
      const p = world.broker.process;
      const pids = treePids(world.broker.pid);
      const exited = p.exitCode === null && p.signalCode === null ? new Promise((res) => p.once('exit', res)) : Promise.resolve();
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
      await exited;
      unmountUnder(dirname(world.broker.stateDir));
    },
    async restartIfDead(tt: Tap.Test) {
      const p = world.broker.process;
      if (p.exitCode === null && p.signalCode === null) return false;
      // A broker that died by itself may have left its front and helpers behind.
      for (const pid of treePids(world.broker.pid).slice(1)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
      unmountUnder(dirname(world.broker.stateDir));
      tt.comment(`the broker had exited (${p.exitCode ?? p.signalCode}); starting a new one for the next cases`);
      world.broker = await startBroker(world.bus.address, undefined, world.broker, spec.brokerArgs ?? []);
      return true;
    },
    snapshot: () => ({ fds: treeFds(world.broker.pid), state: listing(world.broker.stateDir), mounts: imageMounts(world.broker.pid) }),
    async nothingLeft(tt: Tap.Test, before: Snapshot, opts: { fdTimeoutMs?: number; stateMayChange?: boolean } = {}) {
      tt.ok(world.broker.process.exitCode === null && world.broker.process.signalCode === null, 'the broker is alive');
      // A helper a call started (a prober, a build helper) holds fds until it is let go, helperIdleMs after its last use.
      const fds = await fdsBackTo(world.broker.pid, before.fds, opts.fdTimeoutMs ?? helperIdleMs + 5000);
      tt.ok(fds <= before.fds, `the broker tree's fds are back to ${before.fds} (now ${fds})`);
      if (!opts.stateMayChange) tt.same(listing(world.broker.stateDir), before.state, 'nothing was stored in the state dir');
      tt.same(imageMounts(world.broker.pid), before.mounts, 'no new erofs or overlay mount in the broker\'s mountinfo');
    },
    async served(tt: Tap.Test, user: TestUser, label = 'another user', maxMs = 1000) {
      // A frozen broker must not freeze the test: the probe gets a few seconds.
      const r = await adv.probeAs(user, [{ op: 'info' }], { timeoutMs: maxMs + 8000 }).then(([x]) => x!, (err: Error) => ({ ok: false, name: 'no answer', message: err.message.slice(0, 200) }) as Reply);
      tt.ok(r.ok, `${label} is answered GetInfo (${r.name ?? ''} ${r.message ?? ''})`);
      tt.ok((r.ms ?? Infinity) < maxMs, `${label} is answered within ${maxMs} ms (took ${r.ms ?? 'forever'} ms)`);
    },
  });
  // A broker an earlier case SIGKILLed may have left mounts under its directory: the world's own teardown would fail on them.
  const teardown = world.teardown;
  adv.teardown = async () => {
    const dir = dirname(world.broker.stateDir);
    try {
      await world.broker.stop();
    } catch {
      unmountUnder(dir);
      rmSync(dir, { recursive: true, force: true });
    }
    await teardown();
  };
  return adv;
}
