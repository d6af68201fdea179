// The mount locker (src/broker/lock.ts) on the real kernel: the clone it
// returns has every flag locked (real root cannot clear one, where it can on
// the same clone unlocked), is private, and is refused when a mount lies
// below; the long-lived helpers stage nothing in this namespace, keep
// nothing staged between locks, take locks that race, come back after being
// killed, are let go when idle, and end with close(). Runs as root in the test run's private mount
// namespace.
import t from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, fstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LockError, MountLocker } from '../../src/broker/lock.js';
import * as sys from '../../src/sys/syscalls.js';
import { clearableFlags } from '../helpers/mount-flags.js';

const base = mkdtempSync(join(tmpdir(), 'mountgate-lock-'));
const runtimeDir = join(base, 'run');
const source = join(base, 'source');
mkdirSync(runtimeDir);
mkdirSync(source);
// The source is a shared mount, as / is on a systemd host: a clone of it joins its peer group, and what the locker returns must not.
execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'mountgate-lock-source', source]);
execFileSync('mount', ['--make-shared', source]);
const sourceFd = openSync(source, 'r');
const locker = new MountLocker(runtimeDir, 60_000);
const mountsBefore = readFileSync('/proc/self/mountinfo', 'utf8');
t.teardown(() => {
  locker.close();
  closeSync(sourceFd);
  for (const m of readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4]).filter((p) => p?.startsWith(base)).reverse()) {
    try {
      sys.umount2(m!, sys.MNT_DETACH);
    } catch {
      // gone with its parent
    }
  }
  rmSync(base, { recursive: true, force: true });
});

const flags = sys.MOUNT_ATTR.RDONLY | sys.MOUNT_ATTR.NOSUID | sys.MOUNT_ATTR.NODEV | sys.MOUNT_ATTR.NOEXEC;

/** A detached clone of `source` with ro, nosuid, nodev, noexec set (unlocked). */
function detached(recursive = false): number {
  const fd = sys.openTreeClone(sourceFd, recursive);
  sys.mountSetattr(fd, flags);
  return fd;
}

function isOpen(fd: number): boolean {
  try {
    fstatSync(fd);
    return true;
  } catch {
    return false;
  }
}

const helperPids = (): { stage: number[]; clone: number[] } => {
  const out = { stage: [] as number[], clone: [] as number[] };
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    let cmd: string;
    try {
      cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (cmd.startsWith('mountgate-lock-stage')) out.stage.push(Number(p));
    if (cmd.startsWith('mountgate-lock-clone')) out.clone.push(Number(p));
  }
  return out;
};
/** The helpers of this test's locker: the stage helper is this process's child. */
const ours = () => {
  const all = helperPids();
  const stage = all.stage.filter((p) => readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ')[1] === String(process.pid));
  const clone = all.clone.filter((p) => stage.some((s) => readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ')[1] === String(s)));
  return { stage, clone };
};

t.test('the control: the same clone unlocked has every flag clearable by real root', async (tt) => {
  const fd = detached();
  try {
    tt.same(clearableFlags(fd), ['ro', 'nosuid', 'nodev', 'noexec'], 'real root clears each flag of an unlocked clone');
  } finally {
    closeSync(fd);
  }
});

t.test('a locked clone: no flag can be cleared, even by real root, attached or not; it is private', async (tt) => {
  const unlocked = detached();
  const fd = await locker.lock(unlocked);
  tt.notOk(isOpen(unlocked), 'the unlocked mount fd was consumed');
  try {
    tt.same(clearableFlags(fd), [], 'real root clears no flag of the detached locked clone');
    const at = join(base, 'attached');
    mkdirSync(at);
    sys.moveMount(fd, at);
    const line = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === at) ?? '';
    tt.match(line, / ro,nosuid,nodev,noexec/, `attached with its flags (${line.split(' ').slice(4, 6).join(' ')})`);
    tt.notMatch(line, /shared:|master:/, `private: it neither propagates nor receives, though its source is shared (${readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === source)?.split(' ')[6]})`);
    tt.same(clearableFlags(fd), [], 'attached here, real root clears no flag either');
    closeSync(fd);
    sys.umount2(at);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
});

t.test('a mount below the directory: the clone is refused (EINVAL), and the next lock is served', async (tt) => {
  const below = join(source, 'below');
  mkdirSync(below);
  const tmpfs = sys.fsopen('tmpfs');
  sys.fsconfigCreate(tmpfs);
  const m = sys.fsmount(tmpfs, 0);
  closeSync(tmpfs);
  sys.moveMount(m, below);
  closeSync(m);
  const mountedBelow = () => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === below);
  try {
    const err = await locker.lock(detached(true)).then(() => undefined, (e: Error) => e);
    tt.ok(err instanceof LockError && err.code === 'EINVAL', `refused with LockError EINVAL (${err?.message})`);
    // The staged tree held a peer of this mount: its unmount must not have propagated here.
    tt.ok(mountedBelow(), 'the mount below the (shared) source is still mounted here');
  } finally {
    if (mountedBelow()) sys.umount2(below);
  }
  const fd = await locker.lock(detached());
  tt.same(clearableFlags(fd), [], 'the next lock is served, locked');
  closeSync(fd);
});

/**
 * A watcher of the clone helper: once the helper holds one fd more than now
 * (the locked mount it cloned), it stops the helper for `holdMs` and lets it
 * go on. Prints "stopped" when it caught the helper so, "missed" otherwise.
 */
const holdWatcher = String.raw`
my ($pid, $holdMs) = @ARGV;
my $count = sub { opendir(my $d, "/proc/$pid/fd") or return -1; my $n = () = readdir($d); $n };
my $base = $count->();
print "watching\n"; $| = 1;
my $until = time + 5;
while (time < $until) {
  if ($count->() > $base) { kill 'STOP', $pid; print "stopped\n"; select(undef, undef, undef, $holdMs / 1000); kill 'CONT', $pid; exit 0 }
}
print "missed\n";
`;

t.test('a locked mount unmounts at once: the clone helper holds no reference to it once the lock returns', async (tt) => {
  const at = join(base, 'busy');
  mkdirSync(at);
  closeSync(await locker.lock(detached())); // the helpers are running
  const clonePid = ours().clone[0]!;
  // Held between its clone and its release for 300 ms: a lock that returned
  // before the helper let its fd go would leave the mount busy here.
  let caught = 0;
  for (let attempt = 0; attempt < 5 && caught === 0; attempt++) {
    const watcher = spawn('perl', ['-e', holdWatcher, String(clonePid), '300'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const said: string[] = [];
    const ended = new Promise<void>((resolve) => watcher.once('close', () => resolve()));
    await new Promise<void>((resolve) => watcher.stdout.on('data', (d: Buffer) => {
      said.push(...d.toString().trim().split('\n'));
      if (said.includes('watching')) resolve();
    }));
    const fd = await locker.lock(detached());
    sys.moveMount(fd, at);
    closeSync(fd);
    let busy = false;
    try {
      sys.umount2(at);
    } catch (err) {
      if ((err as sys.SyscallError).code !== 'EBUSY') throw err;
      busy = true;
      sys.umount2(at, 2); // MNT_DETACH
    }
    await ended;
    if (!said.includes('stopped')) continue;
    caught++;
    tt.notOk(busy, 'the mount was not busy: the lock returned only after the helper had let its fd go');
  }
  tt.ok(caught > 0, 'the watcher caught the helper holding the mount (in 5 tries)');
});

t.test('nothing is staged in this namespace or left staged in the helper\'s', async (tt) => {
  const now = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(runtimeDir));
  tt.same(now, [], 'no mount at or below the runtime directory here');
  tt.equal(mountsBefore.split('\n').length, readFileSync('/proc/self/mountinfo', 'utf8').split('\n').length, 'this namespace has as many mounts as before the locks');
  const { stage, clone } = ours();
  tt.equal(stage.length, 1, 'one stage helper');
  tt.equal(clone.length, 1, 'one clone helper');
  tt.same(readdirSync(`/proc/${stage[0]}/root`), [], 'the stage helper\'s root (its tmpfs) holds no staging point');
  const theirs = readFileSync(`/proc/${stage[0]}/mountinfo`, 'utf8').trim().split('\n');
  tt.equal(theirs.length, 1, `the stage helper's namespace has one mount, its tmpfs (${theirs.map((l) => l.split(' - ')[1]?.split(' ')[0]).join(', ')})`);
});

t.test('locks that race are all served, each locked', async (tt) => {
  const fds = await Promise.all(Array.from({ length: 24 }, () => locker.lock(detached())));
  tt.equal(new Set(fds).size, 24, '24 distinct mounts');
  tt.same(fds.filter((fd) => clearableFlags(fd).length > 0), [], 'none has a clearable flag');
  fds.forEach((fd) => closeSync(fd));
});

t.test('killed helpers are started again by the next lock; close() ends them', async (tt) => {
  const before = ours();
  process.kill(before.stage[0]!, 'SIGKILL');
  for (let i = 0; i < 100 && helperPids().clone.includes(before.clone[0]!); i++) await new Promise((r) => setTimeout(r, 20));
  tt.notOk(helperPids().clone.includes(before.clone[0]!), 'the clone helper ends with the stage helper');
  // The first lock after the kill may find the old pair gone mid-call; then the next one starts a new pair.
  let fd = await locker.lock(detached()).catch(() => undefined);
  fd ??= await locker.lock(detached());
  tt.same(clearableFlags(fd), [], 'a lock after the kill is served, locked');
  closeSync(fd);
  const after = ours();
  tt.equal(after.stage.length, 1, 'one new stage helper');
  tt.not(after.stage[0], before.stage[0], 'a new one');
  const other = new MountLocker(runtimeDir);
  const fd2 = await other.lock(detached());
  closeSync(fd2);
  const its = ours();
  const otherStage = its.stage.filter((p) => p !== after.stage[0]);
  const otherClone = its.clone.filter((p) => p !== after.clone[0]);
  tt.equal(otherStage.length + otherClone.length, 2, 'a second locker has a pair of its own');
  other.close();
  const alive = () => [...otherStage, ...otherClone].filter((p) => [...helperPids().stage, ...helperPids().clone].includes(p));
  for (let i = 0; i < 100 && alive().length > 0; i++) await new Promise((r) => setTimeout(r, 20));
  tt.same(alive(), [], 'close() ends both its helpers');
  await tt.rejects(other.lock(detached()), /closed/, 'a closed locker refuses');
});

t.test('idle helpers are let go, and the next lock starts them again', async (tt) => {
  const idle = new MountLocker(runtimeDir, 300);
  t.teardown(() => idle.close());
  const before = ours().stage;
  closeSync(await idle.lock(detached()));
  const started = ours().stage.filter((p) => !before.includes(p));
  tt.equal(started.length, 1, 'the first lock started a stage helper');
  for (let i = 0; i < 100 && ours().stage.includes(started[0]!); i++) await new Promise((r) => setTimeout(r, 20));
  tt.notOk(ours().stage.includes(started[0]!), 'it is gone once idle');
  const fd = await idle.lock(detached());
  tt.same(clearableFlags(fd), [], 'the next lock is served, locked');
  closeSync(fd);
});
