// Plans: the list of mount steps that carries out a granted request, as plain
// data. The executor in the broker takes nothing else as input, so the
// bus-facing part never decides what to mount, and `explain` can print it.
import type { IdRange } from '../schema/types.generated.js';
import type { BindGrant } from './decide.js';

export type MountAttr = 'idmap' | 'rdonly' | 'nosuid' | 'nodev' | 'noexec';

export type PlanStep =
  /** Build (or reuse) a user namespace whose uid_map/gid_map carry the idmap. */
  | { step: 'userns'; uidMap: IdRange[]; gidMap: IdRange[] }
  /** Clone the directory behind the caller's fd number `fd` into a detached mount (not recursive: no submounts). */
  | { step: 'clone'; fd: number }
  /** Set attributes on the detached mount; with 'idmap', the namespace of the 'userns' step. */
  | { step: 'setattr'; set: MountAttr[] }
  /** Hand the detached mount back to the caller as an fd. */
  | { step: 'reply' };

export interface Plan {
  method: 'BindIdmapped';
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
        return `clone: open_tree(fd ${s.fd}, OPEN_TREE_CLONE) -> detached mount`;
      case 'setattr':
        return `setattr: mount_setattr(${s.set.join(', ')})`;
      case 'reply':
        return 'reply: return the detached mount as an fd';
    }
  });
}
