// The executor, the one privileged process, takes plans from the front over
// its channel and checks each plan's shape before it does anything: a front
// that sends a plan the planner never makes (an overlay step without its
// noexec, or with a noexec that is not a boolean, a step it does not know, an
// fd it did not pass) gets a BadPlan naming the step, every fd it passed is
// closed, nothing is mounted, and the executor goes on serving: the good plan
// sent after the bad ones mounts the image, and its file reads through the
// mount. The executor is served here on a socketpair (serveExecutor, as
// main.ts serves its front), with the real kernel for the good plan. Runs as
// root (tests run in a private mount namespace).
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Channel, type Frame } from '../../src/broker/channel.js';
import { parseIdFloor } from '../../src/accounts/parse.js';
import { readIdFloor } from '../../src/accounts/load.js';
import { serveExecutor } from '../../src/broker/executor.js';
import { MountLocker } from '../../src/broker/lock.js';
import { planBind, planComposefsMount, type Plan } from '../../src/policy/plan.js';
import { moveMount, socketpair } from '../../src/sys/syscalls.js';
import { UserNamespaceCache } from '../../src/sys/userns.js';
import type { IdRange } from '../../src/schema/types.generated.js';
import { writeObjectImage } from '../helpers/object-image.js';

const base = mkdtempSync(join(tmpdir(), 'mountgate-executor-plans-'));
const objectsDir = join(base, 'objects');
mkdirSync(join(base, 'run'));
const cache = new UserNamespaceCache();
const locker = new MountLocker(join(base, 'run'), 60_000);

const content = Buffer.from('read through the mount the good plan made\n');
const image = join(base, 'image.cfs');
writeObjectImage(image, objectsDir, content);
const grant = { uidMap: [{ from: 0, to: 100000, count: 65536 }], gidMap: [{ from: 0, to: 200000, count: 65536 }], noexec: true };
const good = planComposefsMount(grant, image, objectsDir, { verity: false, fileBackedErofs: true });

// The executor's end and the front's, as main.ts connects them.
const [executorFd, frontFd] = socketpair();
const executorEnd = new Channel(executorFd);
const front = new Channel(frontFd);
const logged: string[] = [];
serveExecutor(executorEnd, { userns: cache, locker, frontUid: process.getuid!() }, (m) => logged.push(m));
const replies = new Map<number, { frame: Frame; fds: number[] }>();
const waiters = new Map<number, () => void>();
front.on('frame', (frame: Frame, fds: number[]) => {
  replies.set(frame.id as number, { frame, fds });
  waiters.get(frame.id as number)?.();
});
let nextId = 1;
async function execute(plan: unknown, fds: number[] = []): Promise<{ frame: Frame; fds: number[] }> {
  const id = nextId++;
  const answered = new Promise<void>((resolve) => waiters.set(id, resolve));
  await front.send({ type: 'execute', id, plan }, fds);
  await answered;
  return replies.get(id)!;
}

t.teardown(() => {
  front.close();
  executorEnd.close();
  locker.close();
  cache.close();
  rmSync(base, { recursive: true, force: true });
});

/** The good plan with its overlay step changed by `change`. */
function withOverlay(change: (step: Record<string, unknown>) => void): Plan {
  const plan = structuredClone(good) as Plan & { steps: Record<string, unknown>[] };
  const step = plan.steps.find((s) => s.step === 'overlay');
  if (!step) throw new Error('the planner made no overlay step');
  change(step);
  return plan;
}

const overlayIndex = good.steps.findIndex((s) => s.step === 'overlay');
/** A bind plan as planBind makes it, of ids a test user could own. */
const bind = planBind({ uidMap: [{ from: 100000, to: 100000, count: 65536 }], gidMap: [{ from: 100000, to: 100000, count: 65536 }], readOnly: false, noexec: false });

/** `plan` with its userns step's maps replaced. */
function withMap(plan: Plan, maps: { uidMap?: IdRange[]; gidMap?: IdRange[] }): Plan {
  return { ...plan, steps: plan.steps.map((s) => (s.step === 'userns' ? { ...s, ...maps } : s)) };
}
const malformed: [string, unknown, RegExp][] = [
  ['an overlay step without noexec', withOverlay((s) => delete s.noexec), new RegExp(`^step ${overlayIndex} \\(overlay\\) is malformed$`)],
  ['an overlay step whose noexec is the string "false"', withOverlay((s) => (s.noexec = 'false')), /\(overlay\) is malformed/],
  ['an overlay step whose noexec is 0', withOverlay((s) => (s.noexec = 0)), /\(overlay\) is malformed/],
  ['an overlay step without verity', withOverlay((s) => delete s.verity), /\(overlay\) is malformed/],
  ['an overlay step whose data directory is relative', withOverlay((s) => (s.dataDir = 'objects')), /\(overlay\) is malformed/],
  ['a step the planner never makes', { ...good, steps: [...good.steps.slice(0, 1), { step: 'chmod', path: '/etc/shadow' }, ...good.steps.slice(1)] }, /^step 1 \(chmod\) is malformed$/],
  ['a clone of an fd that was not passed', { ...bind, steps: bind.steps.map((s) => (s.step === 'clone' ? { step: 'clone', fd: 1 } : s)) }, /^step 1 \(clone\) is malformed$/],
  // Well-formed steps, but not a plan the planner makes: each would hand back a mount weaker than every mount is.
  ['a bind that clones and replies, with no setattr nor lock', { method: 'BindIdmapped', steps: [{ step: 'clone', fd: 0 }, { step: 'reply' }] }, /^a BindIdmapped plan is userns, clone, setattr, lock, reply, not clone, reply$/],
  ['a bind without its lock step', { ...bind, steps: bind.steps.filter((s) => s.step !== 'lock') }, /^a BindIdmapped plan is .*, not userns, clone, setattr, reply$/],
  ['an image mount whose overlay comes after the lock', { ...good, steps: [...good.steps.filter((s) => s.step !== 'overlay').slice(0, -1), good.steps[overlayIndex]!, { step: 'reply' }] }, /^a MountImage plan is userns, erofs, setattr, overlay, lock, reply, not /],
  ['a bind whose setattr lacks nosuid', { ...bind, steps: bind.steps.map((s) => (s.step === 'setattr' ? { step: 'setattr', set: ['idmap', 'nodev'] } : s)) }, /^the setattr step lacks nosuid, which every mount gets$/],
  ['an image mount whose setattr is not an idmap', { ...good, steps: good.steps.map((s) => (s.step === 'setattr' ? { step: 'setattr', set: ['nosuid', 'nodev'] } : s)) }, /^the setattr step lacks idmap/],
  // The idmap: what the front's policy would never grant, refused here whatever the front says.
  ['a bind that shows root\'s files (on-disk uid 0) as a user\'s', withMap(bind, { uidMap: [{ from: 0, to: 100000, count: 1 }] }), /^uid_map range 0 100000 1 shows files of system accounts \(on-disk ids below \d+\)$/],
  ['a bind that shows group shadow\'s files as a user\'s group\'s', withMap(bind, { gidMap: [{ from: 42, to: 200000, count: 1 }] }), /^gid_map range 42 200000 1 shows files of system accounts/],
  ['an image mount whose files would be owned by host root', withMap(good, { uidMap: [{ from: 0, to: 0, count: 65536 }] }), /^uid_map range 0 0 65536 maps onto ids of system accounts \(below \d+\)$/],
  ['an image mount onto a system group', withMap(good, { gidMap: [{ from: 0, to: 5, count: 1 }] }), /^gid_map range 0 5 1 maps onto ids of system accounts/],
  ['a range past the last id', withMap(good, { uidMap: [{ from: 0, to: 2 ** 32 - 10, count: 65536 }] }), /is not a range of ids$/],
  ['a method the executor does not carry out', { ...good, method: 'Unmount' }, /^not a plan$/],
  ['more steps than any plan has', { ...good, steps: Array.from({ length: 17 }, () => ({ step: 'reply' })) }, /^not a plan$/],
  ['no plan at all', null, /^not a plan$/],
];

/** Open fds of this process (both ends of the channel are here: the executor's received copies count too). */
const openFds = () => readdirSync('/proc/self/fd').length;

t.test('a plan of the wrong shape is refused as BadPlan, naming the step, with its fds closed and nothing mounted', async (tt) => {
  const mountsBefore = readFileSync('/proc/self/mountinfo', 'utf8');
  for (const [what, plan, message] of malformed) {
    const fdsBefore = openFds();
    const passed = openSync(image, 'r');
    const { frame, fds } = await execute(plan, [passed]);
    closeSync(passed);
    tt.same({ ok: frame.ok, code: frame.code, fds: fds.length }, { ok: false, code: 'BadPlan', fds: 0 }, `${what}: BadPlan, no mount fd`);
    tt.match(String(frame.message), message, `${what}: ${String(frame.message)}`);
    tt.equal(openFds(), fdsBefore, `${what}: the fd passed with it is closed`);
  }
  tt.equal(readFileSync('/proc/self/mountinfo', 'utf8'), mountsBefore, 'no mount was made or changed');
});

t.test('after them, the good plan mounts the image, noexec, and its file reads', async (tt) => {
  const { frame, fds } = await execute(good);
  tt.equal(frame.ok, true, `the executor carried it out (${String(frame.message ?? '')})`);
  tt.equal(fds.length, 1, 'one mount fd');
  const mnt = mkdtempSync(join(base, 'mnt-'));
  try {
    moveMount(fds[0]!, mnt);
  } finally {
    closeSync(fds[0]!);
  }
  try {
    tt.ok(readFileSync(join(mnt, 'f')).equals(content), 'the file reads through the mount');
    const line = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === mnt) ?? '';
    tt.ok(['ro', 'nosuid', 'nodev', 'noexec'].every((f) => line.split(' ')[5]?.split(',').includes(f)), `ro, nosuid, nodev, noexec (${line.split(' ')[5]})`);
  } finally {
    execFileSync('umount', [mnt]);
  }
  tt.same(logged, [], 'the executor logged nothing (a refusal is the front\'s to hear, not a fault)');
});

t.test('the floor of system ids is login.defs\' UID_MIN and GID_MIN, 1000 where it says nothing', async (tt) => {
  tt.same(parseIdFloor('# comment\nUID_MIN\t\t 2000\nGID_MIN 3000\nSYS_UID_MIN 100\n'), { uid: 2000, gid: 3000 });
  tt.same(parseIdFloor('#UID_MIN 5\nUID_MINIMUM 7\n'), { uid: 1000, gid: 1000 }, 'a commented or other key is not read');
  const floor = readIdFloor();
  tt.ok(floor.uid >= 1 && floor.gid >= 1, `this machine's: uid ${floor.uid}, gid ${floor.gid}`);
});
