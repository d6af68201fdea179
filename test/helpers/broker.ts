// A real broker process (bin/mountgated, built) on a private bus, with a
// policy file of the test's choosing, and its audit lines collected.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Policy } from '../../src/schema/types.generated.js';
import { brokerPath } from './paths.js';
import { ensureFrontUser } from './front-user.js';

export interface BrokerHandle {
  process: ChildProcess;
  pid: number;
  /** Parsed JSON audit lines so far. */
  audit: Record<string, unknown>[];
  stderr(): string;
  policyPath: string;
  /** The broker's state directory (store, images). */
  stateDir: string;
  /** Open fds of the broker process right now. */
  openFds(): number;
  /** Waits until an audit line matches. */
  waitFor(pred: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

/** Starts a broker; with `reuse`, on the state directory of an earlier one (a restart). */
export async function startBroker(busAddress: string, policy?: Policy | string, reuse?: BrokerHandle, extraArgs: string[] = []): Promise<BrokerHandle> {
  const dir = reuse ? dirname(reuse.stateDir) : mkdtempSync(join(tmpdir(), 'mountgate-broker.'));
  // Traversable (not listable) by the front's user, which owns the state dir inside.
  chmodSync(dir, 0o711);
  const policyPath = join(dir, 'policy.json');
  if (policy !== undefined) writeFileSync(policyPath, typeof policy === 'string' ? policy : JSON.stringify(policy));
  const stateDir = join(dir, 'state');
  const runtimeDir = join(dir, 'run');
  ensureFrontUser();
  // Without tap's NODE_OPTIONS hooks: the broker runs as it would in production.
  const child = spawn('env', ['-u', 'NODE_OPTIONS', process.execPath, brokerPath, '--bus-address', busAddress, '--policy', policyPath, '--state-dir', stateDir, '--runtime-dir', runtimeDir, ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const audit: Record<string, unknown>[] = [];
  const waiters: { pred: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }[] = [];
  let err = '';
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        const rec = JSON.parse(line) as Record<string, unknown>;
        audit.push(rec);
        for (const w of [...waiters]) if (w.pred(rec)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(rec); }
      } catch {
        err += `${line}\n`;
      }
    }
  });
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((res) => child.once('exit', () => res()));

  const waitFor = (pred: (l: Record<string, unknown>) => boolean, timeoutMs = 15_000) => {
    const found = audit.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`broker: no matching audit line within ${timeoutMs} ms; stderr: ${err}`)), timeoutMs);
      waiters.push({ pred, resolve: (l) => { clearTimeout(timer); resolve(l); } });
      child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`broker exited (${code}): ${err}`)); });
    });
  };

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor((l) => l.event === 'ready');
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    process: child,
    pid: child.pid!,
    audit,
    stderr: () => err,
    policyPath,
    stateDir,
    openFds: () => readdirSync(`/proc/${child.pid}/fd`).length,
    waitFor,
    stop,
  };
}
