// Runs a command in a new user+mount namespace of the caller, with the full
// rootless mapping (its own id as 0, its subordinate ranges after it, written
// by newuidmap/newgidmap from Debian's uidmap package), after attaching the
// mounts the broker returned. Node cannot unshare or setns itself (it has
// threads), so `unshare` creates the namespaces, waits until the maps are
// written, and only then starts the in-namespace helper (inner.ts): a program
// started before the maps exist would have no capabilities in the namespace.
import { spawn, execFile } from 'node:child_process';
import { closeSync } from 'node:fs';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Duplex } from 'node:stream';
import type { IdRange } from '../schema/types.generated.js';

const execFileAsync = promisify(execFile);
const osSignals = constants.signals as Record<string, number>;
const innerScript = fileURLToPath(new URL('./inner.js', import.meta.url));

export interface NamespaceMounts {
  /** A detached mount fd; ownership passes to runInNamespace. */
  fd: number;
  /** Where to attach it inside the namespace (an existing directory, or one the helper may create). */
  target: string;
}

export interface RunSpec {
  uidMap: IdRange[];
  gidMap: IdRange[];
  mounts: NamespaceMounts[];
  command: string[];
  interactive: boolean;
  cwd?: string;
}

/** What inner.ts receives as its one argument. */
export interface InnerSpec {
  mounts: { fd: number; target: string }[];
  command: string[];
  interactive: boolean;
  cwd?: string;
}

function mapArgs(map: IdRange[]): string[] {
  return map.flatMap((r) => [String(r.from), String(r.to), String(r.count)]);
}

async function writeMaps(pid: number, uidMap: IdRange[], gidMap: IdRange[]): Promise<void> {
  try {
    await execFileAsync('newuidmap', [String(pid), ...mapArgs(uidMap)]);
    await execFileAsync('newgidmap', [String(pid), ...mapArgs(gidMap)]);
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`cannot map ids into the new namespace: ${(e.stderr ?? e.message).trim()} (is the uidmap package installed, and do you have ranges in /etc/subuid and /etc/subgid?)`);
  }
}

/** Runs the command; resolves with its exit status (128+signal when killed). */
export async function runInNamespace(spec: RunSpec): Promise<number> {
  const firstMountFd = 4; // 0-2 stdio, 3 the sync socket
  const inner: InnerSpec = {
    mounts: spec.mounts.map((m, k) => ({ fd: firstMountFd + k, target: m.target })),
    command: spec.command,
    interactive: spec.interactive,
    ...(spec.cwd ? { cwd: spec.cwd } : {}),
  };
  // sh signals readiness on fd 3 from inside the new namespaces, waits for the
  // go, then execs the helper, which starts with full capabilities there.
  const script = 'echo ready >&3 && read go <&3 && exec 3>&- && exec "$0" "$@"';
  const child = spawn(
    'unshare',
    ['--user', '--mount', '--propagation', 'private', '--', 'sh', '-c', script, process.execPath, innerScript, JSON.stringify(inner)],
    { stdio: ['inherit', 'inherit', 'inherit', 'pipe', ...spec.mounts.map((m) => m.fd)] },
  );
  for (const m of spec.mounts) closeSync(m.fd);
  const sync = child.stdio[3] as Duplex;

  const exited = new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve(code ?? 128 + (signal ? (osSignals[signal] ?? 0) : 0)));
  });
  await Promise.race([
    new Promise<void>((resolve) => sync.once('data', () => resolve())),
    exited.then((code) => Promise.reject(new Error(`unshare exited (${code}) before the namespace was ready`))),
  ]);
  try {
    await writeMaps(child.pid!, spec.uidMap, spec.gidMap);
  } catch (err) {
    child.kill('SIGKILL');
    await exited.catch(() => undefined);
    throw err;
  }
  sync.end('go\n');
  return exited;
}
