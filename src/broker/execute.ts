// Carries out a plan: the only broker code that performs mounts, and it takes
// nothing but the plan and the caller's fds. It knows no policy.
import { closeSync } from 'node:fs';
import type { MountAttr, Plan } from '../policy/plan.js';
import { attachLoop } from '../sys/loop.js';
import * as sys from '../sys/syscalls.js';
import type { UserNamespaceCache } from '../sys/userns.js';
import type { MountLocker } from './lock.js';

/** What the executor needs besides the plan and the caller's fds. */
export interface ExecutorDeps {
  userns: UserNamespaceCache;
  /** Needed by plans with a 'lock' step (binds). */
  locker?: MountLocker;
}

const attrBits: Record<MountAttr, number> = {
  idmap: sys.MOUNT_ATTR.IDMAP,
  rdonly: sys.MOUNT_ATTR.RDONLY,
  nosuid: sys.MOUNT_ATTR.NOSUID,
  nodev: sys.MOUNT_ATTR.NODEV,
  noexec: sys.MOUNT_ATTR.NOEXEC,
};

export interface Executed {
  /** The detached mount, owned by the caller of executePlan. */
  mountFd: number;
}

/** A read-only detached EROFS mount of an image file, file-backed or through a loop device. */
function mountErofs(image: string, loop: boolean): number {
  const device = loop ? attachLoop(image) : undefined;
  const fs = sys.fsopen('erofs');
  try {
    sys.fsconfigString(fs, 'source', device ? device.path : image);
    sys.fsconfigString(fs, 'ro');
    sys.fsconfigCreate(fs);
    return sys.fsmount(fs, sys.MOUNT_ATTR.RDONLY | sys.MOUNT_ATTR.NOSUID | sys.MOUNT_ATTR.NODEV);
  } finally {
    closeSync(fs);
    // The superblock holds the device now (or the mount failed): autoclear takes it from here.
    if (device) closeSync(device.fd);
  }
}

/**
 * A read-only overlay with `lower` (a detached mount fd) as its layer and
 * dataDir as data-only layer: nosuid, nodev, and noexec when asked, on the
 * overlay's own mount (a flag of the layer's mount does not reach what the
 * caller execs through the overlay).
 */
function mountOverlay(lower: number, dataDir: string, verity: boolean, noexec: boolean): number {
  const fs = sys.fsopen('overlay');
  try {
    sys.fsconfigString(fs, 'source', 'composefs');
    sys.fsconfigFd(fs, 'lowerdir+', lower);
    sys.fsconfigString(fs, 'datadir+', dataDir);
    sys.fsconfigString(fs, 'metacopy', 'on');
    sys.fsconfigString(fs, 'redirect_dir', 'on');
    if (verity) sys.fsconfigString(fs, 'verity', 'require');
    sys.fsconfigCreate(fs);
    return sys.fsmount(fs, sys.MOUNT_ATTR.RDONLY | sys.MOUNT_ATTR.NOSUID | sys.MOUNT_ATTR.NODEV | (noexec ? sys.MOUNT_ATTR.NOEXEC : 0));
  } finally {
    closeSync(fs);
  }
}

export async function executePlan(plan: Plan, fds: number[], { userns, locker }: ExecutorDeps): Promise<Executed> {
  let nsFd: number | undefined;
  let mountFd: number | undefined;
  try {
    for (const step of plan.steps) {
      switch (step.step) {
        case 'userns':
          nsFd = await userns.get(step.uidMap, step.gidMap);
          break;
        case 'clone': {
          const fd = fds[step.fd];
          if (fd === undefined) throw new Error(`plan names fd ${step.fd}, but only ${fds.length} were passed`);
          mountFd = sys.openTreeClone(fd, true);
          break;
        }
        case 'lock': {
          if (mountFd === undefined) throw new Error('lock without a mount');
          if (!locker) throw new Error('the plan has a lock step, but the executor has no locker');
          const unlocked = mountFd;
          mountFd = undefined;
          mountFd = await locker.lock(unlocked);
          break;
        }
        case 'erofs':
          mountFd = mountErofs(step.image, step.loop);
          break;
        case 'overlay': {
          if (mountFd === undefined) throw new Error('overlay without a lower mount');
          const lower = mountFd;
          mountFd = undefined;
          try {
            mountFd = mountOverlay(lower, step.dataDir, step.verity, step.noexec);
          } finally {
            // The overlay holds its own reference to the layer.
            closeSync(lower);
          }
          break;
        }
        case 'setattr': {
          if (mountFd === undefined) throw new Error('setattr before a mount');
          const bits = step.set.reduce((acc, a) => acc | attrBits[a], 0);
          if (step.set.includes('idmap') && nsFd === undefined) throw new Error('idmap without a userns step');
          sys.mountSetattr(mountFd, bits, 0, nsFd);
          break;
        }
        case 'reply':
          if (mountFd === undefined) throw new Error('reply without a mount');
          return { mountFd };
      }
    }
    throw new Error('plan has no reply step');
  } catch (err) {
    if (mountFd !== undefined) closeSync(mountFd);
    throw err;
  }
}
