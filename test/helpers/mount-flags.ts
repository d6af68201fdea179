// Which flags of a mount real root could clear: the check that a mount's
// flags are locked (the kernel answers EPERM for a locked one).
import * as sys from '../../src/sys/syscalls.js';

const BITS = { ro: sys.MOUNT_ATTR.RDONLY, nosuid: sys.MOUNT_ATTR.NOSUID, nodev: sys.MOUNT_ATTR.NODEV, noexec: sys.MOUNT_ATTR.NOEXEC };
export type MountFlag = keyof typeof BITS;

/**
 * Which of `flags` (flags the mount has: clearing one it lacks always
 * succeeds) real root can clear on the mount at fd, one at a time, each set
 * again after.
 */
export function clearableFlags(fd: number, flags: readonly MountFlag[] = ['ro', 'nosuid', 'nodev', 'noexec']): MountFlag[] {
  const out: MountFlag[] = [];
  for (const name of flags) {
    try {
      sys.mountSetattr(fd, 0, BITS[name]);
      out.push(name);
      sys.mountSetattr(fd, BITS[name]);
    } catch (err) {
      if ((err as sys.SyscallError).code !== 'EPERM') throw err;
    }
  }
  return out;
}
