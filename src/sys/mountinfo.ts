// The mount table of this process's mount namespace (/proc/self/mountinfo):
// which mount an fd is on, that mount's flags and type, and the mounts below
// a directory of it. Parsing is pure; only readMountTable reads the file.
import { readFileSync } from 'node:fs';

export interface MountRecord {
  id: number;
  parent: number;
  /** The path inside its filesystem that is the root of this mount. */
  root: string;
  /** Where it is mounted, in this namespace. */
  mountPoint: string;
  /** Per-mount options: rw/ro, nosuid, nodev, noexec, atime flags. */
  options: string[];
  fsType: string;
  source: string;
}

/** mountinfo escapes space, tab, newline and backslash as \ooo. */
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export function parseMountTable(text: string): Map<number, MountRecord> {
  const table = new Map<number, MountRecord>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const fields = line.split(' ');
    const dash = fields.indexOf('-', 6);
    if (dash < 0) continue;
    const record: MountRecord = {
      id: Number(fields[0]),
      parent: Number(fields[1]),
      root: unescape(fields[3]!),
      mountPoint: unescape(fields[4]!),
      options: fields[5]!.split(','),
      fsType: fields[dash + 1]!,
      source: unescape(fields[dash + 2] ?? ''),
    };
    table.set(record.id, record);
  }
  return table;
}

export function readMountTable(): Map<number, MountRecord> {
  return parseMountTable(readFileSync('/proc/self/mountinfo', 'utf8'));
}

function within(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir === '/' ? '/' : `${dir}/`);
}

/**
 * Mount points of the mounts on `mountId` at or below `path` (a directory of
 * that mount, as this namespace sees it): what a non-recursive clone of the
 * directory would uncover.
 */
export function mountsBelow(table: Map<number, MountRecord>, mountId: number, path: string): string[] {
  const out: string[] = [];
  for (const m of table.values()) if (m.parent === mountId && m.id !== mountId && within(m.mountPoint, path)) out.push(m.mountPoint);
  return out.sort();
}

/** What the policy needs to know about the mount an fd is on, from a mount table. */
export interface MountFacts {
  /** Is the mount in this table's namespace? (Not when it is detached, or another namespace's.) */
  inNamespace: boolean;
  /** Its ro, nosuid, nodev and noexec flags. */
  options: string[];
  /** Mount points below `path` on it: what a non-recursive clone would uncover. */
  below: string[];
}

export function mountFacts(table: Map<number, MountRecord>, mountId: number, path: string | undefined): MountFacts {
  const mount = table.get(mountId);
  return {
    inNamespace: mount !== undefined,
    options: mount ? mount.options.filter((o) => ['ro', 'nosuid', 'nodev', 'noexec'].includes(o)) : [],
    below: mount && path ? mountsBelow(table, mount.id, path) : [],
  };
}
