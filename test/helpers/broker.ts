// A real broker process (bin/mountgated, built) on a private bus, with a
// policy file of the test's choosing, and its audit lines collected.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { brokerEnv, nodeFlags } from '../../src/broker/node-flags.js';
import type { Policy } from '../../src/schema/types.generated.js';
import { brokerPath } from './paths.js';
import { collectAuditLines } from './audit-lines.js';
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
  // Without tap's NODE_OPTIONS hooks, with the flags and environment of the installed unit: the broker runs as it would in production.
  const env = Object.entries(brokerEnv).map(([k, v]) => `${k}=${v}`);
  const child = spawn('env', ['-u', 'NODE_OPTIONS', ...env, process.execPath, ...nodeFlags.executor, brokerPath, '--bus-address', busAddress, '--policy', policyPath, '--state-dir', stateDir, '--runtime-dir', runtimeDir, ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const { lines: audit, stderr, waitFor } = collectAuditLines(child, 'broker');
  const exited = new Promise<void>((res) => child.once('exit', () => res()));

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
    stderr,
    policyPath,
    stateDir,
    openFds: () => readdirSync(`/proc/${child.pid}/fd`).length,
    waitFor,
    stop,
  };
}

/** Applies a policy to a running broker (its policy file, then SIGHUP) and waits for it to say it did. */
export async function applyPolicy(broker: BrokerHandle, policy: object): Promise<void> {
  const seen = broker.audit.length;
  writeFileSync(broker.policyPath, JSON.stringify(policy));
  broker.process.kill('SIGHUP');
  await broker.waitFor((l) => l.event === 'policy' && broker.audit.indexOf(l) >= seen && l.allowed === true);
}
