// Facts about the caller and the fds it passed, gathered by the broker for the
// pure decision. Fds are examined with fstat/fstatfs only: the broker never
// resolves a path the caller named.
import { fstatSync, readlinkSync } from 'node:fs';
import { lookupAccount, type AccountFiles, systemAccountFiles } from '../accounts/load.js';
import type { CallerIdentity, FileKind, SourceFacts } from '../policy/decide.js';
import { fsTypeName, isKernelFilesystem } from '../sys/fsmagic.js';
import * as sys from '../sys/syscalls.js';

function kindOf(mode: number): FileKind {
  switch (mode & 0o170000) {
    case 0o040000: return 'directory';
    case 0o100000: return 'regular';
    case 0o120000: return 'symlink';
    case 0o010000: return 'fifo';
    case 0o140000: return 'socket';
    case 0o020000: return 'chardev';
    case 0o060000: return 'blockdev';
    default: return 'unknown';
  }
}

export function sourceFacts(fd: number): SourceFacts {
  const st = fstatSync(fd);
  const magic = sys.fsMagic(fd);
  let path: string | undefined;
  try {
    // The broker's own view of its own fd: informational and for denied areas.
    path = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    path = undefined;
  }
  return { kind: kindOf(st.mode), ownerUid: st.uid, fsType: fsTypeName(magic), fsDenied: isKernelFilesystem(magic), ...(path ? { path } : {}) };
}

export function identityOf(uid: number, pid: number, files: AccountFiles = systemAccountFiles): CallerIdentity {
  const account = lookupAccount(uid, files);
  if (!account) return { uid, pid };
  return {
    uid,
    pid,
    account: { name: account.name, gid: account.gid, groups: account.groups, subuids: account.subuids, subgids: account.subgids },
  };
}
