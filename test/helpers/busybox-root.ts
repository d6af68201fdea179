// A tiny root filesystem shared by the recipe tests: Debian's static busybox
// (busybox-static) and a few applet symlinks, the mount points bwrap and
// `run` need, and two files whose owners show how ids map (the tree belongs
// to the user, which images record as id 0; one file's group is the user's
// subordinate gid that images record as 42).
import { chownSync, copyFileSync, lchownSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestUser } from './users.js';

export const busybox = '/usr/bin/busybox';
const applets = ['sh', 'ls', 'cat', 'stat', 'id', 'echo', 'touch', 'mknod', 'head', 'mkdir', 'rm'];

/** Makes the tree at `root` (which must not exist); returns `root`. */
export function makeBusyboxRoot(root: string, user: TestUser): string {
  for (const d of ['bin', 'data', 'home/me', 'dev', 'proc', 'sys', 'tmp']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync(busybox, join(root, 'bin', 'busybox'));
  for (const a of applets) symlinkSync('busybox', join(root, 'bin', a));
  writeFileSync(join(root, 'data', 'hello'), 'hello from the image\n');
  writeFileSync(join(root, 'data', 'staff'), 'group 42\n');
  const own = (p: string, gid = user.gid) => lchownSync(p, user.uid, gid);
  for (const p of ['', 'bin', 'bin/busybox', ...applets.map((a) => `bin/${a}`), 'data', 'data/hello', 'home', 'home/me', 'dev', 'proc', 'sys', 'tmp']) own(join(root, p));
  chownSync(join(root, 'data', 'staff'), user.uid, user.subgid.start + 41);
  return root;
}
