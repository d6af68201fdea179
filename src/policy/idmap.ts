// Id range arithmetic for the idmap rule, pure. An idmap is a list of ranges
// {from, to, count}: `from` is the id on disk (or in the image), `to` the id on
// the host. The kernel wants both sides free of overlaps; the policy wants both
// sides (bind) or the host side (image) inside the ids the caller controls.
import type { IdRange } from '../schema/types.generated.js';

export type { IdRange };

/** A half-open interval [start, end) of ids. */
export interface Interval { start: number; end: number }

export const maxId = 4294967294; // (uid_t)-1 is never a valid id
export const maxRanges = 340; // the kernel's limit of lines in uid_map

/** Sorted, merged union of intervals. */
export function normalize(intervals: Interval[]): Interval[] {
  const sorted = intervals.filter((i) => i.end > i.start).sort((a, b) => a.start - b.start);
  const out: Interval[] = [];
  for (const i of sorted) {
    const last = out[out.length - 1];
    if (last && i.start <= last.end) last.end = Math.max(last.end, i.end);
    else out.push({ ...i });
  }
  return out;
}

/** The ids a caller controls: its own id and its subordinate ranges. */
export function controlledIds(own: number, subordinate: { start: number; count: number }[]): Interval[] {
  return normalize([{ start: own, end: own + 1 }, ...subordinate.map((s) => ({ start: s.start, end: s.start + s.count }))]);
}

/** True when every id of [start, start+count) lies in the union. */
export function covers(union: Interval[], start: number, count: number): boolean {
  const end = start + count;
  let at = start;
  for (const i of union) {
    if (i.end <= at) continue;
    if (i.start > at) return false;
    at = i.end;
    if (at >= end) return true;
  }
  return at >= end;
}

/** union minus the given ids. */
export function subtract(union: Interval[], ids: number[]): Interval[] {
  let out = union.map((i) => ({ ...i }));
  for (const id of ids) {
    out = out.flatMap((i) =>
      id < i.start || id >= i.end ? [i] : [{ start: i.start, end: id }, { start: id + 1, end: i.end }],
    );
  }
  return normalize(out);
}

/** The identity map over a union of ids. */
export function identityMap(union: Interval[]): IdRange[] {
  return union.map((i) => ({ from: i.start, to: i.start, count: i.end - i.start }));
}

/** Problems with the shape of a map that the kernel would refuse, as sentences. */
export function shapeProblems(map: IdRange[], name: string): string[] {
  const problems: string[] = [];
  if (map.length > maxRanges) problems.push(`${name} has ${map.length} ranges; the kernel accepts at most ${maxRanges}`);
  map.forEach((r, k) => {
    if (r.from + r.count - 1 > maxId) problems.push(`${name}[${k}] runs past the largest id: ${r.from}+${r.count} > ${maxId + 1}`);
    if (r.to + r.count - 1 > maxId) problems.push(`${name}[${k}] maps past the largest host id: ${r.to}+${r.count} > ${maxId + 1}`);
  });
  for (const side of ['from', 'to'] as const) {
    const sorted = map.map((r, k) => ({ start: r[side], end: r[side] + r.count, k })).sort((a, b) => a.start - b.start);
    for (let k = 1; k < sorted.length; k++) {
      const a = sorted[k - 1]!;
      const b = sorted[k]!;
      if (b.start < a.end) {
        problems.push(`${name}[${a.k}] and ${name}[${b.k}] overlap on the ${side === 'from' ? 'on-disk' : 'host'} side (ids ${b.start}..${Math.min(a.end, b.end) - 1})`);
      }
    }
  }
  return problems;
}

/** Kernel text for /proc/PID/uid_map: "inside outside count" lines, inside = from. */
export function toProcMap(map: IdRange[]): string {
  return map.map((r) => `${r.from} ${r.to} ${r.count}\n`).join('');
}

/** Where an id goes through a map, or undefined when it is unmapped. */
export function mapId(map: IdRange[], id: number): number | undefined {
  for (const r of map) if (id >= r.from && id < r.from + r.count) return r.to + (id - r.from);
  return undefined;
}

/** The inverse lookup: which `from` id lands on host id `to`. */
export function unmapId(map: IdRange[], to: number): number | undefined {
  for (const r of map) if (to >= r.to && to < r.to + r.count) return r.from + (to - r.to);
  return undefined;
}

/** A stable key for caching user namespaces per mapping. */
export function mapKey(uidMap: IdRange[], gidMap: IdRange[]): string {
  const side = (m: IdRange[]) => m.map((r) => `${r.from}:${r.to}:${r.count}`).sort().join(',');
  return `u=${side(uidMap)};g=${side(gidMap)}`;
}

/**
 * The rootless layout (what podman and `mountgate run` use): id 0 is the
 * caller's own id, 1.. its subordinate ranges in order.
 */
export function rootlessMap(own: number, subordinate: { start: number; count: number }[]): IdRange[] {
  const map: IdRange[] = [{ from: 0, to: own, count: 1 }];
  let next = 1;
  for (const s of subordinate) {
    map.push({ from: next, to: s.start, count: s.count });
    next += s.count;
  }
  return map;
}

/**
 * Which side of a range reaches below the floor of user accounts' ids
 * (login.defs' UID_MIN or GID_MIN): 'host' when its host ids do, 'disk' when
 * its on-disk ids do and `disk` asks (a bind's on-disk ids are the host's own
 * files; an image's are its own), else undefined. No caller's own ids are
 * there, and the executor refuses any plan whose idmap is (executor.ts): a
 * map onto them would give files to a system account, or show root's files
 * as someone's.
 */
export function systemSide(r: IdRange, floor: number, disk: boolean): 'host' | 'disk' | undefined {
  if (r.to < floor) return 'host';
  if (disk && r.from < floor) return 'disk';
  return undefined;
}
