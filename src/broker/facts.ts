// The caller's identity for the pure decision, from the uid and pid the bus
// daemon reported and the account files. (Facts about fds a caller passed are
// gathered off the event loop: fd-probe.ts.)
import { lookupAccount, type AccountFiles, systemAccountFiles } from '../accounts/load.js';
import type { CallerIdentity } from '../policy/decide.js';

export function identityOf(uid: number, pid: number, files: AccountFiles = systemAccountFiles): CallerIdentity {
  const account = lookupAccount(uid, files);
  if (!account) return { uid, pid };
  return {
    uid,
    pid,
    account: { name: account.name, gid: account.gid, groups: account.groups, subuids: account.subuids, subgids: account.subgids },
  };
}
