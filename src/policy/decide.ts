// The broker's decisions, as pure functions of plain data:
// (method, caller, request, facts, policy) -> verdict with reasons.
// Nothing here performs I/O; the broker gathers the facts, and
// `mountgate explain` prints exactly what these functions return.
import type { Reason } from '../errors.js';
import type { BindRequest, IdRange, Policy } from '../schema/types.generated.js';
import { defaultLimits } from './default.js';
import { controlledIds, covers, identityMap, type Interval, shapeProblems, systemSide } from './idmap.js';

export const brokerMethods = ['GetInfo', 'BindIdmapped', 'Explain', 'AddImage', 'PutObjects', 'ProveObjects', 'MountImage', 'ListImages', 'RemoveImage'] as const;
export type BrokerMethod = (typeof brokerMethods)[number];
export type RuledMethod = Exclude<BrokerMethod, 'GetInfo'>;

/** Who is calling, as resolved from the bus and the account files. */
export interface CallerIdentity {
  uid: number;
  pid: number;
  /** Undefined when the uid has no /etc/passwd entry. */
  account?: {
    name: string;
    gid: number;
    groups: string[];
    subuids: { start: number; count: number }[];
    subgids: { start: number; count: number }[];
    /** Where user accounts' ids begin (login.defs); no map may reach below (systemIdChecks). Absent: not checked here (the executor still does). */
    idFloor?: { uid: number; gid: number };
  };
}

export type FileKind = 'directory' | 'regular' | 'symlink' | 'fifo' | 'socket' | 'chardev' | 'blockdev' | 'unknown';

/** What the broker learned about a passed fd: fstat/fstatfs (in a killable helper) and the broker's mount table. */
export interface SourceFacts {
  kind: FileKind;
  ownerUid: number;
  /** Filesystem type name, from the fstatfs magic ("ext4", "proc", ...). */
  fsType: string;
  /** Kernel-internal filesystems are never a source. */
  fsDenied: boolean;
  /** The fd's path in the broker's mount namespace, from /proc/self/fd; only for the denied-area rule and messages. */
  path?: string;
  /** Its mount is in the broker's mount namespace (not another namespace's, not a detached mount). */
  inBrokerNamespace: boolean;
  /** The flags of the source's mount among ro, nosuid, nodev, noexec: the clone keeps them, locked. */
  mountOptions: string[];
  /** Mount points at or below the directory on its mount: a bind would uncover what they hide. */
  mountsBelow: string[];
}

/** The caller's current load, from the broker's counters. */
export interface UsageFacts {
  inFlight: number;
  lastMinute: number;
}

export interface Check {
  ok: boolean;
  /** The error class when the check fails. */
  reason?: Reason;
  message: string;
}

export interface BindGrant {
  uidMap: IdRange[];
  gidMap: IdRange[];
  readOnly: boolean;
  noexec: boolean;
  /** Always set, and locked with every flag of the source mount (the 'lock' plan step), so the caller cannot clear them. */
  nosuid: true;
  nodev: true;
}

export interface Verdict<G = unknown> {
  method: BrokerMethod;
  allowed: boolean;
  /** Every check made, in order, passed or not: one sentence each. */
  checks: Check[];
  /** The first failing check's class and sentence. */
  error?: { reason: Reason; message: string };
  grant?: G;
}

/** A verdict from its checks: allowed when none failed, else the first failure's class and sentence. */
export function verdictOf<G>(method: BrokerMethod, checks: Check[], grant?: G): Verdict<G> {
  const failed = checks.find((c) => !c.ok);
  if (!failed) return grant === undefined ? { method, allowed: true, checks } : { method, allowed: true, checks, grant };
  return { method, allowed: false, checks, error: { reason: failed.reason ?? 'PolicyDenied', message: failed.message } };
}

function fmtIntervals(union: Interval[]): string {
  if (union.length === 0) return 'none';
  return union.map((i) => (i.end - i.start === 1 ? `${i.start}` : `${i.start}..${i.end - 1}`)).join(', ');
}

function fmtRange(start: number, count: number): string {
  return count === 1 ? `${start}` : `${start}..${start + count - 1}`;
}

/** May this caller use this method at all? (identity, rule, subordinate ids) */
export function methodChecks(method: RuledMethod, caller: CallerIdentity, policy: Policy): Check[] {
  const account = caller.account;
  if (!account) {
    return [{ ok: false, reason: 'PolicyDenied', message: `uid ${caller.uid} has no entry in /etc/passwd, so it cannot be authorized` }];
  }
  const rule = policy.methods?.[method];
  if (!rule) {
    return [{ ok: false, reason: 'PolicyDenied', message: `the policy allows ${method} to nobody` }];
  }
  const users = rule.users ?? [];
  const groups = rule.groups ?? [];
  const byUser = users.includes('*') || users.includes(account.name);
  const byGroup = groups.find((g) => account.groups.includes(g));
  const checks: Check[] = [];
  if (byUser || byGroup) {
    checks.push({ ok: true, message: `user ${account.name} may call ${method} (${byUser ? `policy users: ${users.join(', ')}` : `member of group ${byGroup}`})` });
  } else {
    checks.push({
      ok: false,
      reason: 'PolicyDenied',
      message: `user ${account.name} may not call ${method}: the policy allows users [${users.join(', ')}] and groups [${groups.join(', ')}]`,
    });
  }
  if (rule.requireSubordinateIds ?? true) {
    const missing = [account.subuids.length === 0 ? '/etc/subuid' : '', account.subgids.length === 0 ? '/etc/subgid' : ''].filter(Boolean);
    checks.push(
      missing.length === 0
        ? { ok: true, message: `user ${account.name} has subordinate ids in /etc/subuid and /etc/subgid` }
        : { ok: false, reason: 'PolicyDenied', message: `user ${account.name} has no range in ${missing.join(' or ')}; ask the administrator for one (usermod --add-subuids/--add-subgids)` },
    );
  }
  return checks;
}

export function limitChecks(policy: Policy, usage: UsageFacts): Check[] {
  const concurrent = policy.limits?.concurrentRequests ?? defaultLimits.concurrentRequests;
  const perMinute = policy.limits?.requestsPerMinute ?? defaultLimits.requestsPerMinute;
  return [
    usage.inFlight < concurrent
      ? { ok: true, message: `${usage.inFlight} of ${concurrent} concurrent requests in use` }
      : { ok: false, reason: 'LimitExceeded', message: `too many requests at once: ${usage.inFlight} in progress, the limit is ${concurrent}` },
    usage.lastMinute < perMinute
      ? { ok: true, message: `${usage.lastMinute} of ${perMinute} requests in the last minute` }
      : { ok: false, reason: 'LimitExceeded', message: `too many requests: ${usage.lastMinute} in the last minute, the limit is ${perMinute}; wait and retry` },
  ];
}

function underPath(path: string, area: string): boolean {
  const a = area.endsWith('/') && area !== '/' ? area.slice(0, -1) : area;
  return path === a || path.startsWith(a === '/' ? '/' : `${a}/`);
}

/** Is this fd an acceptable bind source for this caller? */
export function sourceChecks(caller: CallerIdentity, source: SourceFacts, policy: Policy): Check[] {
  const where = source.path ? `${source.path}` : 'the passed fd';
  const checks: Check[] = [];
  checks.push(
    source.kind === 'directory'
      ? { ok: true, message: `${where} is a directory` }
      : { ok: false, reason: 'InvalidRequest', message: `${where} is a ${source.kind}, not a directory: pass an fd of a directory you own` },
  );
  checks.push(
    source.fsDenied
      ? { ok: false, reason: 'PolicyDenied', message: `${where} is on ${source.fsType}, a kernel filesystem that is never bind-mounted` }
      : { ok: true, message: `${where} is on ${source.fsType}` },
  );
  const area = source.path ? (policy.deniedSources ?? []).find((a) => underPath(source.path!, a)) : undefined;
  checks.push(
    area
      ? { ok: false, reason: 'PolicyDenied', message: `${where} is under ${area}, which the policy denies as a source` }
      : { ok: true, message: `${where} is outside the denied areas` },
  );
  checks.push(
    source.inBrokerNamespace
      ? { ok: true, message: `${where} is in the broker's mount namespace` }
      : {
          ok: false,
          reason: 'InvalidRequest',
          message: `${where} is not in the broker's mount namespace (it was opened inside another mount namespace, or it is a detached mount); open the directory in the host's mount namespace, outside unshare or podman unshare`,
        },
  );
  if (source.mountsBelow.length > 0) {
    const shown = source.mountsBelow.slice(0, 3).join(', ') + (source.mountsBelow.length > 3 ? `, and ${source.mountsBelow.length - 3} more` : '');
    checks.push({ ok: false, reason: 'PolicyDenied', message: `${where} has a mount below it (${shown}): a bind would uncover what it hides; bind a directory with no mounts below it` });
  } else {
    checks.push({ ok: true, message: `${where} has no mounts below it` });
  }
  checks.push(
    source.ownerUid === caller.uid
      ? { ok: true, message: `${where} is owned by you (uid ${caller.uid})` }
      : { ok: false, reason: 'NotOwner', message: `${where} is not owned by you (uid ${caller.uid}); it is owned by uid ${source.ownerUid}` },
  );
  return checks;
}

/**
 * The idmap rule for bind mounts: every range must have BOTH its on-disk ids
 * and its host ids among the ids the caller controls. Mapping only the host
 * side would let a map show a root-owned file in the caller's directory as the
 * caller's own. Returns the checks and the effective map (identity by default).
 */
export function bindMapChecks(
  name: 'uidMap' | 'gidMap',
  requested: IdRange[] | undefined,
  own: number,
  subordinate: { start: number; count: number }[],
): { checks: Check[]; map: IdRange[] } {
  const controlled = controlledIds(own, subordinate);
  const map = requested ?? identityMap(controlled);
  const checks: Check[] = [];
  const shape = shapeProblems(map, name);
  for (const p of shape) checks.push({ ok: false, reason: 'InvalidRequest', message: p });
  if (requested === undefined) {
    checks.push({ ok: true, message: `${name} not given: identity over the ids you control (${fmtIntervals(controlled)})` });
  }
  map.forEach((r, k) => {
    const disk = covers(controlled, r.from, r.count);
    const host = covers(controlled, r.to, r.count);
    const label = `${name}[${k}] ${fmtRange(r.from, r.count)} -> ${fmtRange(r.to, r.count)}`;
    if (disk && host) checks.push({ ok: true, message: `${label}: you control both sides` });
    if (!disk) {
      checks.push({
        ok: false,
        reason: 'PolicyDenied',
        message: `${label}: on-disk ids ${fmtRange(r.from, r.count)} include ids you do not control (you control ${fmtIntervals(controlled)})`,
      });
    }
    if (!host) {
      checks.push({
        ok: false,
        reason: 'PolicyDenied',
        message: `${label}: host ids ${fmtRange(r.to, r.count)} include ids you do not control (you control ${fmtIntervals(controlled)})`,
      });
    }
  });
  return { checks, map };
}

/**
 * The executor's rule, said to the caller before it asks: no range of a map
 * may reach an id of a system account (below login.defs' UID_MIN or
 * GID_MIN) on its host side, nor, for a bind (`disk`), on its on-disk side.
 * Only a caller that is a system account (whose own ids are there) meets it.
 */
export function systemIdChecks(caller: CallerIdentity, maps: { uidMap: IdRange[]; gidMap: IdRange[] }, disk: boolean): Check[] {
  const floor = caller.account?.idFloor;
  if (!floor) return [];
  const checks: Check[] = [];
  for (const [name, map, min, key] of [['uidMap', maps.uidMap, floor.uid, 'UID_MIN'], ['gidMap', maps.gidMap, floor.gid, 'GID_MIN']] as const) {
    map.forEach((r, k) => {
      const side = systemSide(r, min, disk);
      if (!side) return;
      const ids = side === 'host' ? `host ids ${fmtRange(r.to, r.count)}` : `on-disk ids ${fmtRange(r.from, r.count)}`;
      checks.push({ ok: false, reason: 'PolicyDenied', message: `${name}[${k}] ${fmtRange(r.from, r.count)} -> ${fmtRange(r.to, r.count)}: ${ids} include ids of system accounts (below ${key} ${min} in /etc/login.defs); mountgate mounts only for user accounts` });
    });
  }
  return checks;
}

export interface BindDecisionInput {
  caller: CallerIdentity;
  request: BindRequest;
  source: SourceFacts;
  policy: Policy;
  usage: UsageFacts;
}

export function decideBind({ caller, request, source, policy, usage }: BindDecisionInput): Verdict<BindGrant> {
  const checks = methodChecks('BindIdmapped', caller, policy);
  if (checks.some((c) => !c.ok)) return verdictOf<BindGrant>('BindIdmapped', checks);
  checks.push(...limitChecks(policy, usage), ...sourceChecks(caller, source, policy));
  const account = caller.account!;
  const uid = bindMapChecks('uidMap', request.uidMap, caller.uid, account.subuids);
  const gid = bindMapChecks('gidMap', request.gidMap, account.gid, account.subgids);
  checks.push(...uid.checks, ...gid.checks, ...systemIdChecks(caller, { uidMap: uid.map, gidMap: gid.map }, true));
  const flags = ['nosuid', 'nodev', ...(request.readOnly ? ['ro'] : []), ...(request.noexec ? ['noexec'] : [])];
  const inherited = source.mountOptions.filter((o) => !flags.includes(o));
  checks.push({
    ok: true,
    message: `flags: ${[...flags, ...inherited].join(', ')}${inherited.length ? ` (${inherited.join(', ')} from the source mount)` : ''}, locked by the kernel: you cannot clear them on the mount you get, nor any flag the source mount has`,
  });
  return verdictOf('BindIdmapped', checks, {
    uidMap: uid.map,
    gidMap: gid.map,
    readOnly: request.readOnly ?? false,
    noexec: request.noexec ?? false,
    nosuid: true,
    nodev: true,
  });
}

/** May this caller use a method at all (and, given its usage, now)? For methods with no further facts to weigh. */
export function decideMethod(method: RuledMethod, caller: CallerIdentity, policy: Policy, usage?: UsageFacts): Verdict {
  const checks = methodChecks(method, caller, policy);
  if (usage && checks.every((c) => c.ok)) checks.push(...limitChecks(policy, usage));
  return verdictOf(method, checks);
}

/** Explain itself is a method the policy must allow. */
export function decideExplain(caller: CallerIdentity, policy: Policy, usage: UsageFacts): Verdict {
  return decideMethod('Explain', caller, policy, usage);
}
