// Real unprivileged users for tests: created with useradd, given their own
// /etc/subuid and /etc/subgid ranges, and removed (with their ranges) at the
// end. Ranges are allocated above every range already in the files.
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

/** Creates a user; `subids: false` creates one without subordinate ranges. */
export function createUser(prefix = 'mgt', opts: { subids?: boolean } = {}): TestUser {
  const name = `${prefix}-${randomBytes(3).toString('hex')}`;
  run('useradd', ['--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', '--user-group', name]);
  // useradd may have allocated ranges from login.defs; replace them with ours.
  const start = Math.max(highestEnd('/etc/subuid'), highestEnd('/etc/subgid'), 1_000_000_000);
  removeSubIds(name);
  if (opts.subids !== false) {
    run('usermod', ['--add-subuids', `${start}-${start + rangeSize - 1}`, '--add-subgids', `${start}-${start + rangeSize - 1}`, name]);
  }
  const uid = Number(run('id', ['-u', name]).trim());
  const gid = Number(run('id', ['-g', name]).trim());
  return { name, uid, gid, subuid: { start, count: rangeSize }, subgid: { start, count: rangeSize } };
}

function removeSubIds(name: string): void {
  for (const file of ['/etc/subuid', '/etc/subgid']) {
    const kept = readFileSync(file, 'utf8').split('\n').filter((l) => l !== '' && !l.startsWith(`${name}:`));
    execFileSync('sh', ['-c', `cat > ${file}`], { input: kept.map((l) => `${l}\n`).join('') });
  }
}

export function removeUser(user: TestUser): void {
  try {
    execFileSync('pkill', ['-KILL', '-u', user.name], { stdio: 'ignore' });
  } catch {
    // no processes left: the usual case
  }
  removeSubIds(user.name);
  run('userdel', [user.name]);
}
