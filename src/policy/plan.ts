// Plans: the list of mount steps that carries out a granted request, as plain
// data. The executor in the broker takes nothing else as input, so the
// bus-facing part never decides what to mount, and `explain` can print it.
import type { IdRange } from '../schema/types.generated.js';
import type { BindGrant } from './decide.js';
import type { MountGrant } from './images.js';

export type MountAttr = 'idmap' | 'rdonly' | 'nosuid' | 'nodev' | 'noexec';

export type PlanStep =
  /** Build (or reuse) a user namespace whose uid_map/gid_map carry the idmap. */
  | { step: 'userns'; uidMap: IdRange[]; gidMap: IdRange[] }
  /** Clone the mount of the directory behind the caller's fd number `fd`, with the mounts below it, into a detached mount. */
  | { step: 'clone'; fd: number }
  /** Set attributes on the detached mount; with 'idmap', the namespace of the 'userns' step. */
  | { step: 'setattr'; set: MountAttr[] }
  /** Mount a broker-written composefs EROFS image file read-only as a detached mount: file-backed, or through a loop device (kernels before 6.12). */
  | { step: 'erofs'; image: string; loop: boolean }
  /**
   * Overlayfs over the current mount as lower layer, the object store as
   * data-only layer; read-only, nosuid, nodev, and noexec when asked. (What a
   * caller execs or maps is the overlay's file: a flag of the layer below
   * does not reach it, so the overlay carries its own.)
   */
  | { step: 'overlay'; dataDir: string; verity: boolean; noexec: boolean }
  /**
   * Re-clone the detached mount from the copy the kernel propagates into a
   * user+mount namespace of the broker's, where it locks every flag it carries (no one can clear them) and
   * refuses the clone if locked mounts lie below (nothing they hide shows).
   */
  | { step: 'lock' }
  /** Hand the detached mount back to the caller as an fd. */
  | { step: 'reply' };

export interface Plan {
  method: 'BindIdmapped' | 'MountImage';
  steps: PlanStep[];
}

export function planBind(grant: BindGrant): Plan {
  const set: MountAttr[] = ['idmap', 'nosuid', 'nodev'];
  if (grant.readOnly) set.push('rdonly');
  if (grant.noexec) set.push('noexec');
  return {
    method: 'BindIdmapped',
    steps: [
      { step: 'userns', uidMap: grant.uidMap, gidMap: grant.gidMap },
      { step: 'clone', fd: 0 },
      { step: 'setattr', set },
      { step: 'lock' },
      { step: 'reply' },
    ],
  };
}

/**
 * A composefs mount: the EROFS image, idmapped into the caller's ids (only
 * the EROFS layer can be idmapped: overlayfs refuses MOUNT_ATTR_IDMAP), then
 * a read-only overlay whose data-only layer holds the content objects,
 * locked as a bind is: no one the mount is handed to can clear its flags
 * (a noexec the grant set holds against the caller's own processes too).
 */
export function planComposefsMount(grant: MountGrant, image: string, dataDir: string, kernel: { verity: boolean; fileBackedErofs: boolean }): Plan {
  const verity = kernel.verity;
  const set: MountAttr[] = ['idmap', 'nosuid', 'nodev'];
  if (grant.noexec) set.push('noexec');
  return {
    method: 'MountImage',
    steps: [
      { step: 'userns', uidMap: grant.uidMap, gidMap: grant.gidMap },
      { step: 'erofs', image, loop: !kernel.fileBackedErofs },
      { step: 'setattr', set },
      { step: 'overlay', dataDir, verity, noexec: grant.noexec },
      { step: 'lock' },
      { step: 'reply' },
    ],
  };
}

/** One line per step, for `mountgate explain` and the audit log. */
export function describePlan(plan: Plan): string[] {
  const ranges = (m: IdRange[]) => m.map((r) => `${r.from}->${r.to}x${r.count}`).join(' ');
  return plan.steps.map((s) => {
    switch (s.step) {
      case 'userns':
        return `userns: uid_map ${ranges(s.uidMap)}; gid_map ${ranges(s.gidMap)}`;
      case 'clone':
        return `clone: open_tree(fd ${s.fd}, OPEN_TREE_CLONE | AT_RECURSIVE) -> detached mount, keeping the source mount's flags`;
      case 'lock':
        return 'lock: attach at the lock helper\'s staging point, clone the copy propagated into its user+mount namespace non-recursively (the kernel locks every flag; it refuses if mounts lie below) -> detached mount';
      case 'setattr':
        return `setattr: mount_setattr(${s.set.join(', ')})`;
      case 'erofs':
        return `erofs: fsopen(erofs), source=${s.image} (${s.loop ? 'through a read-only autoclear loop device' : 'file-backed'}, read-only) -> detached mount`;
      case 'overlay':
        return `overlay: lowerdir+=<the idmapped erofs mount>, datadir+=${s.dataDir}, metacopy=on, redirect_dir=on${s.verity ? ', verity=require' : ''}, read-only, nosuid, nodev${s.noexec ? ', noexec' : ''}`;
      case 'reply':
        return 'reply: return the detached mount as an fd';
    }
  });
}
