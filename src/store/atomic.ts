// Writing files so that a crash never leaves a wrong file under a final name:
// a temporary file in the same directory, fsync, rename, fsync the directory.
import { closeSync, fsyncSync, openSync, renameSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';

export function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): void {
  const tmp = join(dirname(path), `.tmp-${randomBytes(6).toString('hex')}`);
  // Written and synced through the fd that created it: a read-only mode binds
  // only later opens (the front is not root and cannot reopen it for writing).
  const fd = openSync(tmp, 'wx', mode);
  try {
    writeFileSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  fsyncDir(dirname(path));
}
