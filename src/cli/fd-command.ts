// `mountgate mount IMAGE --fd N -- CMD ARGS...`: CMD runs with the detached
// mount fd the broker returned as its fd N, and nothing is attached anywhere.
// What a program can do with that fd, measured on kernel 6.18 (README, and
// `mountgate mount --help`): read the image through it (/proc/self/fd/N/PATH,
// openat(N, PATH), fchdir(N); ".." at its root stays at its root), or attach
// it with move_mount(N, "", AT_FDCWD, DIR, MOVE_MOUNT_F_EMPTY_PATH) in a mount
// namespace it owns (after `unshare -Urm`, say). It cannot clone it
// (open_tree(N, "", OPEN_TREE_CLONE) is EINVAL: the mount belongs to no
// namespace of the caller's), so bubblewrap 0.8's --bind-fd and --ro-bind-fd,
// which bind the fd's path, fail ("Race condition binding dirfd"). The mount
// lasts while an fd of it is open or once it is attached.
import { spawn } from 'node:child_process';
import { closeSync } from 'node:fs';
import { constants } from 'node:os';

const osSignals = constants.signals as Record<string, number>;

/** The fd numbers --fd takes: above standard input, output and error, and few enough for a stdio table. */
export const fdRange = { min: 3, max: 255 };

/** Runs `command` with `mountFd` as its fd `n` (and stdio inherited, no other fd of ours); resolves with its status, 128+signal when killed, 127 when it cannot start. The fd is consumed. */
export async function runWithFd(mountFd: number, n: number, command: string[]): Promise<number> {
  const stdio = ['inherit', 'inherit', 'inherit', ...Array<'ignore'>(n - 3).fill('ignore'), mountFd] as const;
  let child;
  try {
    child = spawn(command[0]!, command.slice(1), { stdio: [...stdio] });
  } finally {
    closeSync(mountFd);
  }
  // Like `run`: the terminal's signals reach the command itself; one sent to this process is passed on.
  const ignore = () => undefined;
  const forward = (signal: NodeJS.Signals) => child.kill(signal);
  process.on('SIGINT', ignore).on('SIGQUIT', ignore).on('SIGTERM', forward).on('SIGHUP', forward);
  try {
    return await new Promise<number>((resolve) => {
      child.once('error', (err: NodeJS.ErrnoException) => {
        process.stderr.write(`mountgate: cannot run ${command[0]}: ${err.code === 'ENOENT' ? 'no such program' : err.message}\n`);
        resolve(127);
      });
      child.once('exit', (code, signal) => resolve(code ?? 128 + (signal ? (osSignals[signal] ?? 0) : 0)));
    });
  } finally {
    process.off('SIGINT', ignore).off('SIGQUIT', ignore).off('SIGTERM', forward).off('SIGHUP', forward);
  }
}
