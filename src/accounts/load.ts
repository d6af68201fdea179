// Reads the account files and resolves a uid into everything the policy needs
// to know about it. A subuid range removed by the administrator must stop
// working at once: lookupAccount reads the files afresh, and AccountCache
// (for the broker, which asks for every call) asks the kernel on every lookup
// whether any file changed (login.defs too, for where user accounts' ids
// begin), and reads and parses again when one did.
import { readFileSync, statSync } from 'node:fs';
import { groupsOf, parseGroup, parseIdFloor, parsePasswd, parseSubIds, subIdsOf, type GroupEntry, type IdFloor, type PasswdEntry, type SubIdEntry } from './parse.js';

export interface AccountFiles {
  passwd: string;
  group: string;
  subuid: string;
  subgid: string;
  /** Where user accounts' ids begin (UID_MIN, GID_MIN); absent: /etc/login.defs. */
  loginDefs?: string;
}

/** Where the system says user accounts' ids begin (UID_MIN, GID_MIN). */
export const loginDefsPath = '/etc/login.defs';

export const systemAccountFiles: AccountFiles = {
  passwd: '/etc/passwd',
  group: '/etc/group',
  subuid: '/etc/subuid',
  subgid: '/etc/subgid',
  loginDefs: loginDefsPath,
};

export interface Account {
  uid: number;
  gid: number;
  name: string;
  home: string;
  groups: string[];
  subuids: { start: number; count: number }[];
  subgids: { start: number; count: number }[];
  /** The floor of user accounts' ids on this system (login.defs): ids below are system accounts'. */
  idFloor: IdFloor;
}

function readOrEmpty(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  }
}

interface ParsedFiles {
  passwd: PasswdEntry[];
  group: GroupEntry[];
  subuid: SubIdEntry[];
  subgid: SubIdEntry[];
  idFloor: IdFloor;
}

function accountOf(uid: number, parsed: ParsedFiles): Account | undefined {
  const user = parsed.passwd.find((u) => u.uid === uid);
  if (!user) return undefined;
  return {
    uid: user.uid,
    gid: user.gid,
    name: user.name,
    home: user.home,
    groups: groupsOf(parsed.group, user),
    subuids: subIdsOf(parsed.subuid, user.name, user.uid),
    // subgid lines name the user too (by name or by uid), not a group.
    subgids: subIdsOf(parsed.subgid, user.name, user.uid),
    idFloor: parsed.idFloor,
  };
}

/** The account of a uid, or undefined when /etc/passwd has no such user. */
export function lookupAccount(uid: number, files: AccountFiles = systemAccountFiles): Account | undefined {
  return accountOf(uid, {
    passwd: parsePasswd(readOrEmpty(files.passwd)),
    group: parseGroup(readOrEmpty(files.group)),
    subuid: parseSubIds(readOrEmpty(files.subuid)),
    subgid: parseSubIds(readOrEmpty(files.subgid)),
    idFloor: readIdFloor(files.loginDefs),
  });
}

/** The floor of user accounts' ids a login.defs sets (parseIdFloor; a missing file sets none: the defaults). */
export function readIdFloor(path: string = loginDefsPath): IdFloor {
  return parseIdFloor(readOrEmpty(path));
}

/**
 * How long after a file's last change its cached text is still re-read on
 * every lookup: a second write within one tick of the file system's clock
 * can leave size, mtime and ctime as they were (git's "racy" entries), and
 * no file system the account files live on ticks more coarsely than this.
 */
const racyNs = 2_000_000_000n;

/** One account file's text, re-read whenever the kernel reports a different file or a change. */
class WatchedFile<T> {
  private version: string | undefined;
  private trusted = false;
  private parsed!: T;

  constructor(private readonly path: string, private readonly parse: (text: string) => T, private readonly nowNs: () => bigint) {}

  /** The parsed file, and whether it was read afresh for this call. */
  current(): { value: T; changed: boolean } {
    // Stat before reading: a change after the stat at worst makes the next call read again.
    const st = statSync(this.path, { bigint: true, throwIfNoEntry: false });
    const version = st ? `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}` : 'absent';
    if (this.trusted && version === this.version) return { value: this.parsed, changed: false };
    const changed = version !== this.version;
    this.parsed = this.parse(st ? readOrEmpty(this.path) : '');
    this.version = version;
    // Trusted only once its last change lies safely in the past (and never when the clock disagrees).
    const age = st ? this.nowNs() - st.ctimeNs : racyNs;
    this.trusted = age >= racyNs;
    return { value: this.parsed, changed: changed || !this.trusted };
  }
}

/** One answer is handed to many calls: none of them may change it for the others. */
function frozen(account: Account | undefined): Account | undefined {
  if (!account) return undefined;
  for (const r of [...account.subuids, ...account.subgids]) Object.freeze(r);
  Object.freeze(account.groups);
  Object.freeze(account.subuids);
  Object.freeze(account.subgids);
  Object.freeze(account.idFloor);
  return Object.freeze(account);
}

/** Accounts remembered at most, per version of the files. */
const maxCachedAccounts = 4096;

/**
 * lookupAccount for a process that asks for every call: each lookup stats the
 * four files (a few microseconds) and reads and parses only what changed, so
 * a changed /etc/subuid takes effect on the very next lookup, and nothing
 * older than what the kernel reports is ever answered.
 */
export class AccountCache {
  private readonly files: { [K in keyof ParsedFiles]: WatchedFile<ParsedFiles[K]> };
  private readonly accounts = new Map<number, Account | undefined>();

  constructor(files: AccountFiles = systemAccountFiles, nowNs: () => bigint = () => BigInt(Date.now()) * 1_000_000n) {
    this.files = {
      passwd: new WatchedFile(files.passwd, parsePasswd, nowNs),
      group: new WatchedFile(files.group, parseGroup, nowNs),
      subuid: new WatchedFile(files.subuid, parseSubIds, nowNs),
      subgid: new WatchedFile(files.subgid, parseSubIds, nowNs),
      idFloor: new WatchedFile(files.loginDefs ?? loginDefsPath, parseIdFloor, nowNs),
    };
  }

  lookup(uid: number): Account | undefined {
    const passwd = this.files.passwd.current();
    const group = this.files.group.current();
    const subuid = this.files.subuid.current();
    const subgid = this.files.subgid.current();
    const idFloor = this.files.idFloor.current();
    if (passwd.changed || group.changed || subuid.changed || subgid.changed || idFloor.changed) this.accounts.clear();
    if (this.accounts.has(uid)) return this.accounts.get(uid);
    const account = frozen(accountOf(uid, { passwd: passwd.value, group: group.value, subuid: subuid.value, subgid: subgid.value, idFloor: idFloor.value }));
    if (this.accounts.size >= maxCachedAccounts) this.accounts.clear();
    this.accounts.set(uid, account);
    return account;
  }
}
