// Runs a program as a test user, the way a user would: its own uid, gid and
// groups, a minimal environment, the broker's bus address.
import { spawn } from 'node:child_process';
import type { TestUser } from './users.js';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function runAs(user: TestUser, argv: string[], opts: { busAddress?: string; input?: string; cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    // tap wraps child_process to inject its process-info hooks through
    // NODE_OPTIONS; a test user's programs run without them, as a user's would.
    const child = spawn('env', ['-u', 'NODE_OPTIONS', ...argv], {
      uid: user.uid,
      gid: user.gid,
      cwd: opts.cwd ?? '/',
      env: {
        PATH: '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin',
        HOME: '/nonexistent',
        USER: user.name,
        LANG: 'C.UTF-8',
        ...(opts.busAddress ? { MOUNTGATE_BUS_ADDRESS: opts.busAddress } : {}),
        ...(opts.env ?? {}),
      },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    // A program may exit without reading its input (umount does): its
    // result is in the exit status, not in an EPIPE of our write.
    child.stdin.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') reject(err);
    });
    child.stdin.end(opts.input ?? '');
  });
}
