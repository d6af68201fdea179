// The system user the broker's front runs as (mountgated --front-user,
// default mountgate), which the production bus policy lets own the broker's
// name. scripts/install-deps.sh creates it; tests run without it make it too.
// It is a system account of the machine, like the package's: never swept.
import { execFileSync } from 'node:child_process';

export const frontUserName = 'mountgate';

/** The front user's uid, creating the account if the machine has none. */
export function ensureFrontUser(): number {
  const id = () => Number(execFileSync('id', ['-u', frontUserName], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
  try {
    return id();
  } catch {
    execFileSync('useradd', ['--system', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', '--user-group', frontUserName], { stdio: 'ignore' });
    return id();
  }
}
