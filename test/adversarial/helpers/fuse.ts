// FUSE filesystems served by the test user: the machine-wide settings a
// user's FUSE mount needs (/dev/fuse open to users as on stock Debian, and
// user_allow_other in /etc/fuse.conf), set for a test's duration and restored;
// and FUSE daemons (bindfs, squashfuse) run as the user, stopped with SIGSTOP
// to make every request on them hang, and always cleaned up.
import { execFileSync } from 'node:child_process';
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import type { TestUser } from '../../helpers/users.js';
import { spawnAs, type SpawnedAs } from './adv-world.js';

let fuseRefs = 0;
let fuseMode = 0;
/** /dev/fuse mode 0666 (Debian's stock) until the returned restore is called. */
export function openDevFuse(): () => void {
  if (fuseRefs++ === 0) {
    fuseMode = statSync('/dev/fuse').mode & 0o7777;
    chmodSync('/dev/fuse', 0o666);
  }
  let done = false;
  return () => {
    if (done) return;
    done = true;
    if (--fuseRefs === 0) chmodSync('/dev/fuse', fuseMode);
  };
}

/** user_allow_other in /etc/fuse.conf until the returned restore is called (the file is put back byte for byte). */
export function allowOther(): () => void {
  const original = readFileSync('/etc/fuse.conf', 'utf8');
  if (!/^user_allow_other\s*$/m.test(original)) writeFileSync('/etc/fuse.conf', `${original}\nuser_allow_other\n`);
  let done = false;
  return () => {
    if (done) return;
    done = true;
    writeFileSync('/etc/fuse.conf', original);
  };
}

/** Mount points of fuse filesystems in this (the test's and the broker's) mount namespace. */
export function fuseMountsAt(path: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === path && / - fuse/.test(l));
}

/** Lazily unmounts path as root if anything is mounted there (a FUSE mount whose daemon died). */
export function unmountIfMounted(path: string): void {
  for (let k = 0; k < 5; k++) {
    const mounted = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === path);
    if (!mounted) return;
    execFileSync('umount', ['-l', path], { stdio: 'ignore' });
  }
}

export function signalPid(pid: number | undefined, sig: NodeJS.Signals): void {
  if (!pid) return;
  try {
    process.kill(pid, sig);
  } catch {
    // gone
  }
}

/**
 * A user script that sets up a FUSE daemon (it prints "fuse-pid N" on stderr)
 * and then execs the probe client with ops; the test stops and resumes the
 * daemon with stop()/resume().
 */
export interface FuseScenario {
  run: SpawnedAs;
  daemonPid(): Promise<number>;
  stop(): Promise<void>;
  resume(): Promise<void>;
  /** Resumes and kills the daemon and the script, unmounts what is left. */
  cleanup(): Promise<void>;
}

export function fuseScenario(user: TestUser, busAddress: string, script: string, probeArgv: string[], opts: { userns: boolean; mountpoints: string[] }): FuseScenario {
  const argv = [...(opts.userns ? ['unshare', '-Urm', '--propagation', 'private'] : []), 'sh', '-ec', script, 'sh', ...probeArgv];
  const run = spawnAs(user, argv, busAddress);
  let pid: number | undefined;
  const daemonPid = async () => {
    if (pid) return pid;
    await run.waitOutput(/fuse-pid \d+/);
    pid = Number(/fuse-pid (\d+)/.exec(run.stderr())![1]);
    return pid;
  };
  return {
    run,
    daemonPid,
    async stop() {
      signalPid(await daemonPid(), 'SIGSTOP');
    },
    async resume() {
      signalPid(await daemonPid(), 'SIGCONT');
    },
    async cleanup() {
      signalPid(pid, 'SIGCONT');
      signalPid(pid, 'SIGKILL');
      const exited = await Promise.race([run.done.then(() => true), new Promise((r) => setTimeout(() => r(false), 5000))]);
      if (!exited) run.kill();
      for (const m of opts.mountpoints) unmountIfMounted(m);
    },
  };
}
