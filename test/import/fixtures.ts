// A small source tree with what layer tarballs carry (long names past 100 and
// 255 bytes, a long symlink target, hardlinks, a sparse file, setuid and
// sticky bits, numeric owners, xattrs, a fifo, an empty file) and tarballs of
// it made by GNU tar in several formats. Built once per test file.
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, linkSync, mkdirSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const longName = 'n'.repeat(150);
export const deepDir = ['d'.repeat(100), 'e'.repeat(100), 'f'.repeat(80)].join('/');

/** Builds the tree under `root` (which must not exist); `withLong`: names that ustar cannot hold. */
export function buildTree(root: string, withLong = true): void {
  mkdirSync(join(root, 'etc'), { recursive: true });
  mkdirSync(join(root, 'usr/bin'), { recursive: true });
  mkdirSync(join(root, 'tmp'), { recursive: true });
  writeFileSync(join(root, 'etc/hostname'), 'layer\n');
  writeFileSync(join(root, 'etc/empty'), '');
  writeFileSync(join(root, 'usr/bin/tool'), Buffer.alloc(70_000, 7));
  chmodSync(join(root, 'usr/bin/tool'), 0o4755);
  chmodSync(join(root, 'tmp'), 0o1777);
  linkSync(join(root, 'usr/bin/tool'), join(root, 'usr/bin/tool-again'));
  symlinkSync('../etc/hostname', join(root, 'usr/hostname-link'));
  writeFileSync(join(root, 'etc/owned'), 'owned by 1234:5678\n');
  chownSync(join(root, 'etc/owned'), 1234, 5678);
  // Sparse: 1 MiB hole, 5 bytes, another hole to 3 MiB, 4 KiB of data at the end.
  const sparse = join(root, 'sparse.img');
  execFileSync('truncate', ['-s', '1M', sparse]);
  execFileSync('sh', ['-c', `printf hello >> ${sparse} && truncate -s 3M ${sparse} && dd if=/dev/urandom of=${sparse} bs=4096 count=1 seek=768 conv=notrunc status=none`]);
  execFileSync('mkfifo', [join(root, 'etc/fifo')]);
  execFileSync('setfattr', ['-n', 'user.comment', '-v', 'hello xattr', join(root, 'etc/hostname')]);
  execFileSync('setfattr', ['-n', 'user.bin', '-v', '0x00ff10', join(root, 'usr/bin/tool')]);
  execFileSync('setcap', ['cap_net_bind_service=+ep', join(root, 'usr/bin/tool')]);
  if (withLong) {
    writeFileSync(join(root, longName), 'a name of 150 bytes\n');
    mkdirSync(join(root, deepDir), { recursive: true });
    writeFileSync(join(root, deepDir, 'deep.txt'), 'a path longer than 255 bytes\n');
    symlinkSync(`${deepDir}/deep.txt`, join(root, 'long-link'));
    linkSync(join(root, deepDir, 'deep.txt'), join(root, 'hard-to-deep'));
  }
  // A time with a fraction of a second (PAX keeps it).
  utimesSync(join(root, 'etc/hostname'), 1_600_000_000.25, 1_600_000_000.25);
}

export type TarFormat = 'gnu' | 'posix' | 'ustar' | 'posix-sparse-0.0' | 'posix-sparse-0.1' | 'oldgnu';

/** `tar -c` of `root`'s contents into `out` (GNU tar, sorted by name, numeric owners). */
export function makeTar(root: string, out: string, format: TarFormat): void {
  const args = ['--sort=name', '--numeric-owner', '-C', root, '-cf', out];
  if (format === 'gnu') args.push('--format=gnu', '--sparse');
  else if (format === 'oldgnu') args.push('--format=oldgnu', '--sparse');
  else if (format === 'ustar') args.push('--format=ustar');
  else if (format === 'posix') args.push('--format=posix', '--xattrs', '--xattrs-include=*', '--sparse', '--sparse-version=1.0');
  else args.push('--format=posix', '--xattrs', '--xattrs-include=*', '--sparse', `--sparse-version=${format.slice(-3)}`);
  execFileSync('tar', [...args, '.']);
}
