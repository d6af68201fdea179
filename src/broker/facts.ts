// The caller's identity for the pure decision, from the uid and pid the bus
// daemon reported and the account files (as they are now: AccountCache asks
// the kernel on every call whether they changed). (Facts about fds a caller
// passed are gathered off the event loop: fd-probe.ts.)
import type { AccountCache } from '../accounts/load.js';
import type { CallerIdentity } from '../policy/decide.js';

export function identityOf(uid: number, pid: number, accounts: AccountCache): CallerIdentity {
  const account = accounts.lookup(uid);
  if (!account) return { uid, pid };
  return {
    uid,
    pid,
    account: { name: account.name, gid: account.gid, groups: account.groups, subuids: account.subuids, subgids: account.subgids, idFloor: account.idFloor },
  };
}
