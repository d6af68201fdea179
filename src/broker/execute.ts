// Carries out a plan: the only broker code that performs mounts, and it takes
// nothing but the plan and the caller's fds. It knows no policy.
import { closeSync } from 'node:fs';
import type { MountAttr, Plan } from '../policy/plan.js';
import * as sys from '../sys/syscalls.js';
import type { UserNamespaceCache } from '../sys/userns.js';

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

export async function executePlan(plan: Plan, fds: number[], userns: UserNamespaceCache): Promise<Executed> {
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
          mountFd = sys.openTreeClone(fd);
          break;
        }
        case 'setattr': {
          if (mountFd === undefined) throw new Error('setattr before clone');
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
