// Reads the account files and resolves a uid into everything the policy needs
// to know about it. The files are read on every call: they are small, and a
// subuid range removed by the administrator must stop working at once.
import { readFileSync } from 'node:fs';
import { groupsOf, parseGroup, parsePasswd, parseSubIds, subIdsOf } from './parse.js';

export interface AccountFiles {
  passwd: string;
  group: string;
  subuid: string;
  subgid: string;
}

export const systemAccountFiles: AccountFiles = {
  passwd: '/etc/passwd',
  group: '/etc/group',
  subuid: '/etc/subuid',
  subgid: '/etc/subgid',
};

export interface Account {
  uid: number;
  gid: number;
  name: string;
  home: string;
  groups: string[];
  subuids: { start: number; count: number }[];
  subgids: { start: number; count: number }[];
}

function readOrEmpty(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  }
}

/** The account of a uid, or undefined when /etc/passwd has no such user. */
export function lookupAccount(uid: number, files: AccountFiles = systemAccountFiles): Account | undefined {
  const user = parsePasswd(readOrEmpty(files.passwd)).find((u) => u.uid === uid);
  if (!user) return undefined;
  return {
    uid: user.uid,
    gid: user.gid,
    name: user.name,
    home: user.home,
    groups: groupsOf(parseGroup(readOrEmpty(files.group)), user),
    subuids: subIdsOf(parseSubIds(readOrEmpty(files.subuid)), user.name, user.uid),
    // subgid lines name the user too (by name or by uid), not a group.
    subgids: subIdsOf(parseSubIds(readOrEmpty(files.subgid)), user.name, user.uid),
  };
}
