// The privileged part of mountgated: it only mounts. Over its private
// channel it receives plans (the typed steps of src/policy/plan.ts) and the
// caller fds they name, checks that each is a plan the front's planner makes
// (checkPlan: the steps in their order, the flags every mount gets, no id of
// a system account in its idmap), carries them out and sends the mount fd
// back. It knows no policy, parses no JSON but the frames the front sent
// (and reads /etc/login.defs once), and opens only the image and
// object-store paths a plan names, without following any symlink, and only
// when the front's user owns them: the front writes everything the kernel is
// asked to parse.
import { closeSync, fstatSync } from 'node:fs';
import { isAbsolute, normalize } from 'node:path';
import { readIdFloor } from '../accounts/load.js';
import type { IdFloor } from '../accounts/parse.js';
import { systemSide } from '../policy/idmap.js';
import type { MountAttr, Plan, PlanStep } from '../policy/plan.js';
import { mountFacts, readMountTable } from '../sys/mountinfo.js';
import * as sys from '../sys/syscalls.js';
import type { Channel, Frame } from './channel.js';
import { executePlan, type ExecutorDeps } from './execute.js';
import { LockError } from './lock.js';

const attrs = new Set(['idmap', 'rdonly', 'nosuid', 'nodev', 'noexec']);

function isRanges(v: unknown): boolean {
  return (
    Array.isArray(v) &&
    v.length <= 340 &&
    v.every((r) => r && typeof r === 'object' && ['from', 'to', 'count'].every((k) => Number.isInteger((r as Record<string, unknown>)[k]) && ((r as Record<string, number>)[k] ?? -1) >= 0))
  );
}

function isPath(v: unknown): v is string {
  return typeof v === 'string' && isAbsolute(v) && normalize(v) === v && !v.includes('\0') && v.length < 4096;
}

/** The step sequences plan.ts makes, and nothing else: every mount is idmapped, nosuid, nodev and locked before it is handed back. */
const SEQUENCES: Record<Plan['method'], readonly PlanStep['step'][]> = {
  BindIdmapped: ['userns', 'clone', 'setattr', 'lock', 'reply'],
  MountImage: ['userns', 'erofs', 'setattr', 'overlay', 'lock', 'reply'],
};
const ALWAYS_SET: readonly MountAttr[] = ['idmap', 'nosuid', 'nodev'];

/**
 * What is wrong with a plan's idmap, or undefined: no range maps an id of a
 * system account on its host side, nor, for a bind (where the on-disk side
 * is the host's files), on its on-disk side. The front's policy allows a
 * caller only ids it controls on both sides; this holds whatever the front
 * says: a front that asked to show root's files (on-disk 0) as someone's
 * own, or to give anything to its own system user, is refused here.
 */
function idmapProblem(method: Plan['method'], step: Extract<PlanStep, { step: 'userns' }>, floor: IdFloor): string | undefined {
  for (const [name, map, min] of [['uid_map', step.uidMap, floor.uid], ['gid_map', step.gidMap, floor.gid]] as const) {
    for (const r of map) {
      const range = `${name} range ${r.from} ${r.to} ${r.count}`;
      if (r.count < 1 || r.from + r.count > 2 ** 32 || r.to + r.count > 2 ** 32) return `${range} is not a range of ids`;
      const side = systemSide(r, min, method === 'BindIdmapped');
      if (side === 'host') return `${range} maps onto ids of system accounts (below ${min})`;
      if (side === 'disk') return `${range} shows files of system accounts (on-disk ids below ${min})`;
    }
  }
  return undefined;
}

/**
 * The plan if it is one plan.ts makes (its steps of the shapes it declares,
 * in the order it puts them, with the flags every mount gets and an idmap of
 * no system account), else a sentence saying what is wrong. The front decides
 * what a caller may have; this is what the executor holds to whatever the
 * front sends.
 */
export function checkPlan(plan: unknown, fdCount: number, floor: IdFloor = readIdFloor()): { plan: Plan } | { problem: string } {
  const p = plan as Plan | undefined;
  if (!p || typeof p !== 'object' || (p.method !== 'BindIdmapped' && p.method !== 'MountImage') || !Array.isArray(p.steps) || p.steps.length > 16) return { problem: 'not a plan' };
  for (const [k, s] of p.steps.entries()) {
    const step = s as PlanStep & Record<string, unknown>;
    const ok = (() => {
      switch (step?.step) {
        case 'userns': return isRanges(step.uidMap) && isRanges(step.gidMap);
        case 'clone': return Number.isInteger(step.fd) && step.fd >= 0 && step.fd < fdCount;
        case 'setattr': return Array.isArray(step.set) && step.set.every((a) => attrs.has(a));
        case 'erofs': return isPath(step.image) && typeof step.loop === 'boolean';
        case 'overlay': return isPath(step.dataDir) && typeof step.verity === 'boolean' && typeof step.noexec === 'boolean';
        case 'lock':
        case 'reply': return true;
        default: return false;
      }
    })();
    if (!ok) return { problem: `step ${k} (${String(step?.step)}) is malformed` };
  }
  const sequence = SEQUENCES[p.method];
  const steps = p.steps.map((s) => s.step);
  if (steps.length !== sequence.length || steps.some((s, k) => s !== sequence[k])) {
    return { problem: `a ${p.method} plan is ${sequence.join(', ')}, not ${steps.join(', ')}` };
  }
  const set = (p.steps.find((s) => s.step === 'setattr') as Extract<PlanStep, { step: 'setattr' }>).set;
  const missing = ALWAYS_SET.filter((a) => !set.includes(a));
  if (missing.length > 0) return { problem: `the setattr step lacks ${missing.join(', ')}, which every mount gets` };
  const problem = idmapProblem(p.method, p.steps[0] as Extract<PlanStep, { step: 'userns' }>, floor);
  if (problem) return { problem };
  return { plan: p };
}

/**
 * Opens the image file and the object directory a plan names, refusing
 * symlinks anywhere on the way and anything the front's user does not own,
 * and points the plan at the opened files (/proc/self/fd/N).
 */
function pinPaths(plan: Plan, frontUid: number): { plan: Plan; opened: number[] } {
  const opened: number[] = [];
  const pin = (path: string, kind: 'file' | 'directory'): string => {
    const fd = sys.openPathNoSymlinks(path);
    opened.push(fd);
    const st = fstatSync(fd);
    if (st.uid !== frontUid || (kind === 'file' ? !st.isFile() : !st.isDirectory())) throw new Error(`${path} is not a ${kind} of the front's user`);
    return `/proc/self/fd/${fd}`;
  };
  try {
    const steps = plan.steps.map((s): PlanStep => {
      if (s.step === 'erofs') return { ...s, image: pin(s.image, 'file') };
      if (s.step === 'overlay') return { ...s, dataDir: pin(s.dataDir, 'directory') };
      return s;
    });
    return { plan: { ...plan, steps }, opened };
  } catch (err) {
    opened.forEach((fd) => closeSync(fd));
    throw err;
  }
}

function closeAll(fds: number[]): void {
  for (const fd of fds) {
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
  }
}

/**
 * Serves `execute` frames (plans) and `mount-facts` frames (what the host's
 * mount table says about one mount: a read of this process's own
 * mountinfo, which no caller can stall) on the channel until it closes.
 */
export function serveExecutor(channel: Channel, deps: ExecutorDeps & { frontUid: number; idFloor?: IdFloor }, log: (message: string) => void): void {
  const floor = deps.idFloor ?? readIdFloor();
  channel.on('frame', (frame: Frame, fds: number[]) => {
    if (frame.type === 'up' || frame.type === 'reload-policy') return; // the front's start and reload: main.ts's business
    if (frame.type === 'mount-facts' && typeof frame.id === 'number' && fds.length === 0) {
      const path = frame.path;
      if (!Number.isInteger(frame.mountId) || (path !== undefined && !isPath(path))) {
        void channel.send({ id: frame.id, ok: false, code: 'BadRequest', message: 'mount-facts needs a mount id and an absolute path' }).catch(() => undefined);
        return;
      }
      void channel.send({ id: frame.id, ok: true, facts: mountFacts(readMountTable(), frame.mountId as number, path as string | undefined) }).catch(() => undefined);
      return;
    }
    if (frame.type !== 'execute' || typeof frame.id !== 'number') {
      closeAll(fds);
      log(`the executor ignored a frame of type ${String(frame.type).slice(0, 40)}`);
      return;
    }
    const id = frame.id;
    const answer = (reply: Frame, mountFd?: number) =>
      channel.send({ id, ...reply }, mountFd === undefined ? [] : [mountFd]).catch(() => undefined).finally(() => mountFd !== undefined && closeAll([mountFd]));
    const checked = checkPlan(frame.plan, fds.length, floor);
    if ('problem' in checked) {
      closeAll(fds);
      void answer({ ok: false, code: 'BadPlan', message: checked.problem });
      return;
    }
    let opened: number[] = [];
    void (async () => {
      const pinned = pinPaths(checked.plan, deps.frontUid);
      opened = pinned.opened;
      return executePlan(pinned.plan, fds, deps);
    })()
      .then(({ mountFd }) => answer({ ok: true }, mountFd))
      .catch((err: Error) => {
        const code = err instanceof LockError ? `Lock:${err.code}` : err instanceof sys.SyscallError ? `${err.syscall}:${err.code}` : 'Error';
        void answer({ ok: false, code, message: err.message });
      })
      .finally(() => closeAll([...fds, ...opened]));
  });
}
