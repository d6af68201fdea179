// Locking a detached mount's flags, for binds of the caller's directories.
// A clone made by root in the host namespace carries its flags unlocked: once
// attached in the caller's namespace, the caller could clear ro, nosuid,
// nodev and noexec, so a mount handed out would be weaker than the one that
// protects its source (a user-made filesystem image mounted nodev, a FUSE
// mount, an administrator's ro,noexec bind). The kernel locks mount flags in
// exactly one situation: when it copies mounts into a mount namespace owned
// by a less privileged user namespace. So the mount is attached at a private
// staging point, a helper is started in a fresh user+mount namespace (a copy
// of the broker's, every flag locked), clones it there, and the broker takes
// that clone. Measured on 6.18: real root cannot clear its flags either.
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import * as sys from '../sys/syscalls.js';

const helperPath = new URL('./lock-helper.js', import.meta.url).pathname;

export class MountLocker {
  private next = 0;

  /** Mounts a private tmpfs at `stageDir`, so nothing staged there propagates to any other namespace. */
  constructor(private readonly stageDir: string) {
    mkdirSync(stageDir, { recursive: true, mode: 0o700 });
    try {
      sys.umount2(stageDir, sys.MNT_DETACH); // a staging mount left by an earlier broker
    } catch {
      // none: the usual case
    }
    const fs = sys.fsopen('tmpfs');
    try {
      sys.fsconfigString(fs, 'mode', '0700');
      sys.fsconfigString(fs, 'size', '1m');
      sys.fsconfigCreate(fs);
      const m = sys.fsmount(fs, sys.MOUNT_ATTR.NOSUID | sys.MOUNT_ATTR.NODEV | sys.MOUNT_ATTR.NOEXEC);
      try {
        sys.makePrivate(m);
        sys.moveMount(m, stageDir);
      } finally {
        closeSync(m);
      }
    } finally {
      closeSync(fs);
    }
  }

  /** A clone of the detached mount `mountFd` whose flags the kernel has locked; `mountFd` is consumed. */
  async lock(mountFd: number): Promise<number> {
    const point = join(this.stageDir, String(this.next++));
    mkdirSync(point, { mode: 0o700 });
    let attached = false;
    try {
      sys.moveMount(mountFd, point);
      attached = true;
      return await this.cloneInLockedNamespace(point);
    } finally {
      closeSync(mountFd);
      if (attached) sys.umount2(point, sys.MNT_DETACH);
      rmdirSync(point);
    }
  }

  private cloneInLockedNamespace(point: string): Promise<number> {
    const child = spawn('unshare', ['--user', '--map-root-user', '--mount', '--', process.execPath, helperPath, point], { stdio: ['pipe', 'pipe', 'pipe'], env: {} });
    return new Promise<number>((resolve, reject) => {
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-2000)));
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`the lock helper exited (${code}) before cloning: ${err.trim()}`)));
      child.stdout.once('data', (d: Buffer) => {
        const line = d.toString().trim();
        const m = /^fd (\d+)$/.exec(line);
        if (!m) {
          reject(new LockError(line.replace(/^error /, '')));
          return;
        }
        const pidfd = sys.pidfdOpen(child.pid!);
        try {
          resolve(sys.pidfdGetfd(pidfd, Number(m[1])));
        } catch (e) {
          reject(e);
        } finally {
          closeSync(pidfd);
        }
      });
    }).finally(() => {
      child.removeAllListeners('exit');
      child.stdin.end();
      if (child.exitCode === null) child.kill('SIGKILL');
    });
  }

  close(): void {
    try {
      sys.umount2(this.stageDir, sys.MNT_DETACH);
    } catch {
      // already gone
    }
  }
}

/** The kernel refused the clone in the locked namespace (EINVAL: locked mounts below the directory). */
export class LockError extends Error {
  constructor(readonly code: string) {
    super(`cloning in the locked namespace failed: ${code}`);
  }
}
