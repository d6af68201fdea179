// Real unprivileged users for tests: created with useradd, given their own
// /etc/subuid and /etc/subgid ranges, and removed (with their ranges) at the
// end. Ranges are allocated above every range already in the files. The
// files are only read here; every change goes through useradd, usermod and
// userdel, which take shadow's own lock. Each user is marked (GECOS) with the
// id of the run that made it (MOUNTGATE_TEST_RUN, set by
// scripts/private-ns.sh), so the runner can sweep a killed file's users.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';

export interface TestUser {
  name: string;
  uid: number;
  gid: number;
  subuid: { start: number; count: number };
  subgid: { start: number; count: number };
}

const rangeSize = 65536;

function highestEnd(file: string): number {
  let end = 0;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const [, start, count] = line.split(':');
    if (start && count) end = Math.max(end, Number(start) + Number(count));
  }
  return end;
}

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** The GECOS mark scripts/private-ns.sh sweeps by; outside a run, a mark it never sweeps. */
function runMark(): string {
  const runId = process.env.MOUNTGATE_TEST_RUN ?? '';
  return /^\d+ [0-9a-f]+$/.test(runId) ? `mountgate test run ${runId}` : 'mountgate test user';
}

/** Creates a user; `subids: false` creates one without subordinate ranges, `system: true` a system account (an id below UID_MIN). */
export function createUser(prefix = 'mgt', opts: { subids?: boolean; system?: boolean } = {}): TestUser {
  const name = `${prefix}-${randomBytes(3).toString('hex')}`;
  // SUB_*_COUNT=0: useradd allocates no ranges of its own from login.defs.
  run('useradd', ['--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', '--user-group',
    '--comment', runMark(), '--key', 'SUB_UID_COUNT=0', '--key', 'SUB_GID_COUNT=0', ...(opts.system ? ['--system'] : []), name]);
  const start = Math.max(highestEnd('/etc/subuid'), highestEnd('/etc/subgid'), 1_000_000_000);
  const range = `${start}-${start + rangeSize - 1}`;
  if (opts.subids !== false) run('usermod', ['--add-subuids', range, '--add-subgids', range, name]);
  const uid = Number(run('id', ['-u', name]).trim());
  const gid = Number(run('id', ['-g', name]).trim());
  return { name, uid, gid, subuid: { start, count: rangeSize }, subgid: { start, count: rangeSize } };
}

/** The user's own ranges in a subordinate id file, as usermod takes them (first-last). */
function rangesOf(file: string, name: string): string[] {
  return readFileSync(file, 'utf8').split('\n').flatMap((line) => {
    const [owner, start, count] = line.split(':');
    return owner === name && start && count ? [`${start}-${Number(start) + Number(count) - 1}`] : [];
  });
}

export function removeUser(user: TestUser): void {
  try {
    execFileSync('pkill', ['-KILL', '-u', user.name], { stdio: 'ignore' });
  } catch {
    // no processes left: the usual case
  }
  const args = [
    ...rangesOf('/etc/subuid', user.name).flatMap((r) => ['--del-subuids', r]),
    ...rangesOf('/etc/subgid', user.name).flatMap((r) => ['--del-subgids', r]),
  ];
  if (args.length > 0) run('usermod', [...args, user.name]);
  run('userdel', [user.name]);
}
