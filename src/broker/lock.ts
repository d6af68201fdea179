// Locking a detached mount's flags, for binds of the caller's directories.
// A clone made by root in the host namespace carries its flags unlocked: once
// attached in the caller's namespace, the caller could clear ro, nosuid,
// nodev and noexec, so a mount handed out would be weaker than the one that
// protects its source (a user-made filesystem image mounted nodev, a FUSE
// mount, an administrator's ro,noexec bind). The kernel locks mount flags in
// two situations: when it copies mounts into a mount namespace owned by a
// less privileged user namespace, and when a mount propagates into one. This
// file uses the second, with two helpers that serve one lock after another
// and are let go when idle (measured on 6.18: a lock takes about 0.2 ms,
// against 2.7 ms when every lock started a helper in a fresh user+mount
// namespace):
//
//   stage  runs as root in a mount namespace of its own whose only mount is
//          a tmpfs (it pivots into it and drops every host mount, so it pins
//          nothing and receives nothing from the host). That tmpfs is shared.
//   clone  a child of stage in a new user namespace (no ids mapped: its
//          credentials stay root's, it owns the tmpfs) and a new mount
//          namespace copied from stage's, where the tmpfs is a slave of
//          stage's.
//
// A lock: the executor makes its detached mount private, with every mount
// below it (a clone of a shared mount is in its source's peer group, and
// detaching the staged tree would otherwise unmount the host's own mounts
// below the caller's directory), and names its fd; stage reopens it through
// /proc (O_PATH, a read-mode ptrace check: it needs no pidfd_getfd of its
// parent, so no CAP_SYS_PTRACE under Yama) and attaches it at /N on its
// tmpfs; the kernel propagates a copy to clone's namespace, with every flag
// locked; clone takes open_tree(OPEN_TREE_CLONE) of /N there, non-recursive,
// so the kernel refuses it (EINVAL) when locked mounts lie below and nothing
// they hide is uncovered, and makes it private; the executor takes that fd
// with pidfd_getfd, and stage detaches /N (the unmount propagates too).
//
// Nobody but the executor reaches the helpers' namespaces (entering one needs
// root's ptrace access), so no other namespace receives what is staged; and
// a host user's own namespaces, copied from the host's, never hold the
// tmpfs. Locks are taken one at a time.
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { closeSync } from 'node:fs';
import { constants } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import * as sys from '../sys/syscalls.js';
import { helperIdleMs } from './idle-pool.js';

/**
 * Both helpers, in Perl (perl-base is Essential in Debian, and it starts in
 * milliseconds where Node takes tens), as one program: stage forks clone.
 * Syscall numbers are x86-64's and every architecture's that came after the
 * tables were unified for the mount API (open_tree 428, move_mount 429,
 * mount_setattr 442); the older ones (openat 257, mount 165, umount2 166,
 * pivot_root 155, unshare 272) are x86-64's. Perl passes a string argument
 * as a pointer to its buffer and may write to it, so every string given to
 * syscall is a fresh variable. Protocol, one line each way:
 *   executor -> stage  "N stage FD"  (FD: the executor's detached mount)
 *                      "N done"      (the executor has its copy, or gave up)
 *   stage -> clone     "N clone" / "N release"
 *   to the executor    "ready PID" (clone's pid, once), "N fd FD" (clone's
 *                      fd of the locked mount), "N errno E stage|clone",
 *                      "N released" (clone's, after "N done": nothing is
 *                      staged, and clone holds no reference to the mount,
 *                      which would keep it busy: a umount right after EBUSY)
 */
const helperProgram = String.raw`
use strict; $| = 1;
$0 = 'mountgate-lock-stage';
sub fail { print "init errno ", $! + 0, " $_[0]\n"; exit 1 }
my ($at) = @ARGV;
my $fddir = syscall(257, -100, my $p1 = '/proc/' . getppid() . '/fd', 0x10000 | 0x80000);
$fddir >= 0 or fail('open /proc/PPID/fd');
syscall(165, my $s = 'mountgate-lock', my $t = $at, my $ty = 'tmpfs', 0xe, my $o = 'mode=0700,size=64k') == 0 or fail('mount tmpfs');
chdir $at or fail('chdir');
syscall(155, my $n1 = '.', my $n2 = '.') == 0 or fail('pivot_root');
syscall(166, my $d = '.', 2) == 0 or fail('detach the old root');
chdir '/' or fail('chdir /');
syscall(165, 0, my $r = '/', 0, 1 << 20, 0) == 0 or fail('make / shared');
pipe(my $from_stage, my $to_clone) or fail('pipe');
my $clone = fork() // fail('fork');
if ($clone == 0) {
  $0 = 'mountgate-lock-clone';
  close $to_clone; syscall(3, $fddir);
  syscall(272, 0x10000000 | 0x20000) == 0 or fail('unshare user+mount');
  print "ready $$\n";
  my %held;
  while (my $line = <$from_stage>) {
    my ($n, $op) = $line =~ /^(\d+) (clone|release)$/ or next;
    if ($op eq 'clone') {
      my $fd = syscall(428, -100, my $p = "/$n", 0x80001);
      if ($fd < 0) { print "$n errno ", $! + 0, " clone\n"; next }
      if (syscall(442, $fd, my $e = '', 0x1000, my $a = pack('Q4', 0, 0, 1 << 18, 0), 32) < 0) {
        my $err = $! + 0; syscall(3, $fd); print "$n errno $err clone\n"; next;
      }
      $held{$n} = $fd; print "$n fd $fd\n";
    } else {
      my $fd = delete $held{$n}; syscall(3, $fd) if defined $fd;
      print "$n released\n";
    }
  }
  exit 0;
}
close $from_stage; select((select($to_clone), $| = 1)[0]);
my %staged;
while (my $line = <STDIN>) {
  my ($n, $op, $fd) = $line =~ /^(\d+) (stage \d+|done)$/ or next;
  if ($op =~ /^stage (\d+)$/) {
    $fd = $1;
    my $m = syscall(257, $fddir, my $name = '' . ($fd + 0), 0x200000 | 0x80000);
    if ($m < 0) { print "$n errno ", $! + 0, " stage\n"; next }
    mkdir "/$n", 0700;
    my $rc = syscall(429, $m, my $e = '', -100, my $to = "/$n", 4); my $err = $! + 0;
    syscall(3, $m);
    if ($rc < 0) { rmdir "/$n"; print "$n errno $err stage\n"; next }
    $staged{$n} = 1; print $to_clone "$n clone\n";
  } else {
    if (delete $staged{$n}) { syscall(166, my $p = "/$n", 2); rmdir "/$n" }
    print $to_clone "$n release\n";
  }
}
`;

const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([name, n]) => [n, name]));

/** How long one lock may take before the helpers are presumed stuck, killed and started again on the next lock. */
const lockTimeoutMs = 10_000;

type Helper = ChildProcessByStdio<Writable, Readable, Readable>;

/** The running pair: stage (the child) and clone's pidfd, and the answer lines not yet taken. */
class LockHelpers {
  private readonly lines: string[] = [];
  private waiting?: (line: string | undefined) => void;
  private ended = false;
  private stderr = '';
  cloneFd?: number;

  constructor(readonly child: Helper) {
    let buffered = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      buffered += chunk;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        this.push(buffered.slice(0, nl));
        buffered = buffered.slice(nl + 1);
      }
    });
    // Writing to helpers that died fails with EPIPE: their end shows as 'close' on stdout, the lock's answer.
    child.stdin.on('error', () => undefined);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => (this.stderr = (this.stderr + d).slice(-2000)));
    child.once('close', () => {
      this.ended = true;
      this.push(undefined);
    });
    child.once('error', () => {
      this.ended = true;
      this.push(undefined);
    });
  }

  get alive(): boolean {
    return !this.ended;
  }

  private push(line: string | undefined): void {
    const w = this.waiting;
    if (w) {
      this.waiting = undefined;
      w(line);
    } else if (line !== undefined) this.lines.push(line);
  }

  /** The next line the helpers printed; undefined once they are gone. */
  next(): Promise<string | undefined> {
    const line = this.lines.shift();
    if (line !== undefined || this.ended) return Promise.resolve(line);
    return new Promise((resolve) => (this.waiting = resolve));
  }

  send(line: string): void {
    if (!this.ended) this.child.stdin.write(`${line}\n`);
  }

  why(): string {
    return this.stderr.trim() || `exit ${this.child.exitCode ?? this.child.signalCode ?? 'unknown'}`;
  }

  stop(): void {
    this.ended = true;
    this.child.stdin.end();
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
    if (this.cloneFd !== undefined) closeSync(this.cloneFd);
    this.cloneFd = undefined;
  }
}

export class MountLocker {
  private helpers?: LockHelpers;
  private starting?: Promise<LockHelpers>;
  private queue: Promise<unknown> = Promise.resolve();
  private next = 0;
  private closed = false;

  private pending = 0;
  private idleTimer?: NodeJS.Timeout;

  /**
   * `mountPoint`: an existing directory the stage helper mounts its tmpfs
   * over, in its own mount namespace only. The helpers start with the first
   * lock and are let go `idleMs` after the last, as the broker's other
   * helpers are (src/broker/idle-pool.ts): a broker at rest holds none.
   */
  constructor(private readonly mountPoint: string, private readonly idleMs = helperIdleMs) {}

  /** A clone of the detached mount `mountFd` whose flags the kernel has locked; `mountFd` is consumed. */
  lock(mountFd: number): Promise<number> {
    this.pending++;
    clearTimeout(this.idleTimer);
    const run = this.queue.then(() => this.lockOne(mountFd));
    this.queue = run.catch(() => undefined).finally(() => {
      if (--this.pending > 0 || this.closed) return;
      this.idleTimer = setTimeout(() => {
        if (this.pending === 0 && this.helpers) this.drop(this.helpers);
      }, this.idleMs).unref();
    });
    return run;
  }

  private async lockOne(mountFd: number): Promise<number> {
    try {
      if (this.closed) throw new Error('the mount locker is closed');
      // A clone of a shared mount (/ on a systemd host) is in its source's peer
      // groups, and an unmount propagates between peers: detaching the staged
      // tree would unmount the host's own mounts below the caller's directory.
      sys.makePrivate(mountFd, true);
      const helpers = await this.running();
      const n = this.next++;
      const deadline = Date.now() + lockTimeoutMs;
      helpers.send(`${n} stage ${mountFd}`);
      const line = await this.reply(helpers, deadline);
      try {
        return this.answer(helpers, n, line);
      } finally {
        // A lock returns, and the next one starts, only once stage has detached
        // this one: between locks nothing is staged. Helpers that fail to say so
        // are stopped, and whatever they staged goes with their namespace.
        if (helpers.alive) {
          helpers.send(`${n} done`);
          const ack = await this.reply(helpers, deadline).catch(() => undefined);
          if (ack !== `${n} released`) this.drop(helpers);
        }
      }
    } finally {
      closeSync(mountFd);
    }
  }

  /** The helpers' next line, before `deadline`; helpers that exit or miss it are stopped, and the lock fails. */
  private async reply(helpers: LockHelpers, deadline: number): Promise<string> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), Math.max(0, deadline - Date.now()))));
    try {
      const line = await Promise.race([helpers.next(), timeout]);
      if (line === 'timeout') {
        this.drop(helpers);
        throw new Error(`the lock helpers did not answer within ${lockTimeoutMs} ms; they were stopped`);
      }
      if (line === undefined) {
        this.drop(helpers);
        throw new Error(`the lock helpers exited: ${helpers.why()}`);
      }
      return line;
    } finally {
      clearTimeout(timer);
    }
  }

  private answer(helpers: LockHelpers, n: number, line: string): number {
    const fd = new RegExp(`^${n} fd (\\d+)$`).exec(line);
    if (fd) return sys.pidfdGetfd(helpers.cloneFd!, Number(fd[1]));
    const refused = new RegExp(`^${n} errno (\\d+) (stage|clone)$`).exec(line);
    if (!refused) {
      this.drop(helpers);
      throw new Error(`the lock helpers answered ${JSON.stringify(line.slice(0, 200))} to lock ${n}; they were stopped`);
    }
    const errno = Number(refused[1]);
    // Staging is the executor's own step (it failed the same way when done in-process); cloning is the kernel's verdict on the caller's directory.
    if (refused[2] === 'stage') throw new sys.SyscallError('move_mount (lock stage)', errno);
    throw new LockError(errnoNames.get(errno) ?? `errno ${errno}`);
  }

  private running(): Promise<LockHelpers> {
    if (this.helpers?.alive) return Promise.resolve(this.helpers);
    this.starting ??= this.start().finally(() => (this.starting = undefined));
    return this.starting;
  }

  private async start(): Promise<LockHelpers> {
    const child = spawn('unshare', ['--mount', '--propagation', 'private', '--', 'perl', '-e', helperProgram, this.mountPoint], { stdio: ['pipe', 'pipe', 'pipe'], env: {} });
    const helpers = new LockHelpers(child);
    const line = await helpers.next();
    const ready = line && /^ready (\d+)$/.exec(line);
    if (!ready) {
      helpers.stop();
      throw new Error(`the lock helpers did not start: ${line ?? helpers.why()}`);
    }
    try {
      // clone is stage's child, alive while stage is (it exits when stage's pipe closes): its pid is not reused before its pidfd is open.
      helpers.cloneFd = sys.pidfdOpen(Number(ready[1]));
    } catch (err) {
      helpers.stop();
      throw err;
    }
    this.helpers = helpers;
    return helpers;
  }

  private drop(helpers: LockHelpers): void {
    helpers.stop();
    if (this.helpers === helpers) this.helpers = undefined;
  }

  /** Stops the helpers; their namespaces, and anything still staged there, go with them. */
  close(): void {
    this.closed = true;
    clearTimeout(this.idleTimer);
    if (this.helpers) this.drop(this.helpers);
  }
}

/** The kernel refused the clone in the locked namespace (EINVAL: locked mounts below the directory). */
export class LockError extends Error {
  constructor(readonly code: string) {
    super(`cloning in the locked namespace failed: ${code}`);
  }
}
