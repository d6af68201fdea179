// The user namespace a client builds for itself, and bind maps expressed in
// its terms. Pure: takes the caller's ids and ranges, returns maps.
import type { IdRange } from '../schema/types.generated.js';
import { controlledIds, identityMap, rootlessMap, subtract, type Interval } from '../policy/idmap.js';

/** The rootless layout: namespace id 0 is the caller's own id, 1.. its subordinate ranges in order. */
export const namespaceMap = rootlessMap;

/** Host id that namespace id `inner` stands for, through a namespaceMap. */
export function hostIdOf(nsMap: IdRange[], inner: number): number | undefined {
  for (const r of nsMap) if (inner >= r.from && inner < r.from + r.count) return r.to + (inner - r.from);
  return undefined;
}

/**
 * A bind map under which files the caller owns on disk (id `own`) appear in
 * its namespace as id `inner`: on-disk `own` goes to the host id that `inner`
 * stands for, that host id comes back as `own` (a swap), and every other id
 * the caller controls maps to itself.
 */
export function ownerMap(own: number, subordinate: { start: number; count: number }[], nsMap: IdRange[], inner: number): IdRange[] {
  const host = hostIdOf(nsMap, inner);
  if (host === undefined) throw new Error(`id ${inner} is not mapped in your namespace (it maps ${nsMap.map((r) => `${r.from}..${r.from + r.count - 1}`).join(', ')})`);
  if (host === own) return identityMap(controlledIds(own, subordinate));
  const rest: Interval[] = subtract(controlledIds(own, subordinate), [own, host]);
  return [{ from: own, to: host, count: 1 }, { from: host, to: own, count: 1 }, ...identityMap(rest)];
}

/** /proc/PID/uid_map or gid_map text: {from: id inside, to: id outside, count} per line. */
export function parseIdMapText(text: string): IdRange[] {
  return text.split('\n').map((l) => l.trim()).filter(Boolean).map((line) => {
    const [from, to, count] = line.split(/\s+/).map(Number);
    if (![from, to, count].every((n) => Number.isInteger(n) && n! >= 0)) throw new Error(`not an id map line: ${line}`);
    return { from: from!, to: to!, count: count! };
  });
}

/** Is this the map of the initial user namespace (every id is itself)? */
export function isInitialIdMap(map: IdRange[]): boolean {
  return map.length === 1 && map[0]!.from === 0 && map[0]!.to === 0 && map[0]!.count === 4294967295;
}

/** A map the other way round: outside ids to inside ids. */
export function invertIdMap(map: IdRange[]): IdRange[] {
  return map.map((r) => ({ from: r.to, to: r.from, count: r.count }));
}

/** One line per range, "inside→outside ×count", for messages. */
export function showIdMap(map: IdRange[]): string {
  return map.map((r) => (r.count === 1 ? `${r.from}→${r.to}` : `${r.from}..${r.from + r.count - 1}→${r.to}..${r.to + r.count - 1}`)).join(', ');
}

/**
 * `inner` (ids of a namespace → ids of its parent) followed by `outer` (the
 * parent's ids → host ids): the namespace's ids → host ids. Every id `inner`
 * maps to must be mapped by `outer`.
 */
export function composeIdMaps(inner: IdRange[], outer: IdRange[]): IdRange[] {
  const out: IdRange[] = [];
  for (const r of inner) {
    let [from, via, left] = [r.from, r.to, r.count];
    while (left > 0) {
      const o = outer.find((x) => via >= x.from && via < x.from + x.count);
      if (!o) throw new Error(`id ${via} is not mapped by ${showIdMap(outer)}`);
      const count = Math.min(left, o.from + o.count - via);
      out.push({ from, to: o.to + (via - o.from), count });
      [from, via, left] = [from + count, via + count, left - count];
    }
  }
  return out;
}

/**
 * The map of a container podman starts with `--userns keep-id` in a
 * namespace whose map is `nsMap` (ids 0..N-1): namespace id 0 (the caller)
 * becomes container id `inner` (the caller's own id, or N of
 * `keep-id:uid=N`), ids below it are namespace ids 1..inner, ids above it
 * stay where they are. Measured with podman 4.3.1: for `keep-id:uid=200` in
 * a namespace of 65537 ids the container's uid_map is "0 1 200 / 200 0 1 /
 * 201 201 65336"; for uid=70000, beyond the namespace, "0 1 65536 / 70000 0 1".
 */
export function keepIdMap(nsMap: IdRange[], inner: number): IdRange[] {
  const size = nsMap.reduce((n, r) => n + r.count, 0);
  const below = Math.min(inner, size - 1);
  const layout: IdRange[] = [
    ...(below > 0 ? [{ from: 0, to: 1, count: below }] : []),
    { from: inner, to: 0, count: 1 },
    ...(inner + 1 < size ? [{ from: inner + 1, to: inner + 1, count: size - inner - 1 }] : []),
  ];
  return composeIdMaps(layout, nsMap).sort((a, b) => a.from - b.from);
}

/** podman's `--userns` values mountgate can lay ids out for: keep-id, keep-id:uid=N,gid=N. */
export interface KeepIdOption {
  /** The container id the caller's uid becomes (default: the caller's uid). */
  uid?: number;
  /** The container id the caller's gid becomes (default: the caller's gid). */
  gid?: number;
}

/** Parses a `--userns` value as podman 4.3 takes it: "keep-id", or "keep-id:" with uid=N and/or gid=N, comma-separated. */
export function parseUsernsOption(text: string): KeepIdOption {
  const [mode, rest] = text.split(/:(.*)/s, 2) as [string, string | undefined];
  if (mode !== 'keep-id') throw new Error(`--userns ${text}: only keep-id (and keep-id:uid=N,gid=N) is known, the layout of podman's --userns keep-id`);
  if (rest === undefined) return {};
  const out: KeepIdOption = {};
  for (const part of rest.split(',')) {
    const m = /^(uid|gid)=(\d{1,10})$/.exec(part);
    const n = m ? Number(m[2]) : NaN;
    if (!m || n > 4294967294) throw new Error(`--userns ${text}: "${part}" is not uid=N or gid=N (N from 0 to 4294967294)`);
    if (out[m[1] as 'uid' | 'gid'] !== undefined) throw new Error(`--userns ${text}: ${m[1]} is given twice`);
    out[m[1] as 'uid' | 'gid'] = n;
  }
  return out;
}

/**
 * The toolbox layout ("keep-id"): the caller's own id is itself inside, and
 * its subordinate ranges fill every other id from 0 up, skipping it; so the
 * caller is themselves and root is a subordinate id. As a namespace map it
 * maps inside ids to host ids; as an image's map, image id N lands on the host
 * id that shows as N inside.
 */
export function toolboxIdMap(own: number, subordinate: { start: number; count: number }[]): IdRange[] {
  const map: IdRange[] = [];
  let next = 0;
  for (const s of subordinate) {
    let to = s.start;
    let left = s.count;
    while (left > 0) {
      if (next === own) next++;
      const count = next < own ? Math.min(left, own - next) : left;
      map.push({ from: next, to, count });
      next += count;
      to += count;
      left -= count;
    }
  }
  map.push({ from: own, to: own, count: 1 });
  return map.sort((a, b) => a.from - b.from);
}
