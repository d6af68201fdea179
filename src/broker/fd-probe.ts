// Facts about a caller's fd, gathered off the event loop: a child process
// (probe-helper) examines the fd and is killed at the deadline, so an fd on a
// filesystem that never answers costs the caller its own request slot and
// nobody else anything. The mount facts come from the broker's own mount
// table, which no caller can stall.
import { spawn } from 'node:child_process';
import { TimeoutError } from '../errors.js';
import type { FileKind, SourceFacts } from '../policy/decide.js';
import { fsTypeName, isKernelFilesystem } from '../sys/fsmagic.js';
import { mountsBelow, readMountTable } from '../sys/mountinfo.js';
import type { FairQueue } from './fair-queue.js';

const helperPath = new URL('./probe-helper.js', import.meta.url).pathname;

function kindOf(mode: number): FileKind {
  switch (mode & 0o170000) {
    case 0o040000: return 'directory';
    case 0o100000: return 'regular';
    case 0o120000: return 'symlink';
    case 0o010000: return 'fifo';
    case 0o140000: return 'socket';
    case 0o020000: return 'chardev';
    case 0o060000: return 'blockdev';
    default: return 'unknown';
  }
}

interface RawFacts {
  mode: number;
  uid: number;
  magic: number;
  path?: string;
  mountId: number;
}

function examine(fd: number, deadlineMs: number): Promise<RawFacts> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--max-old-space-size=32', helperPath], { stdio: ['ignore', 'pipe', 'pipe', fd], env: {} });
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new TimeoutError(`the passed fd did not answer within ${deadlineMs / 1000} s (its filesystem, e.g. a FUSE server, is not responding); nothing was done`));
    }, deadlineMs);
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-2000)));
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      if (code === 0) {
        try {
          resolve(JSON.parse(out) as RawFacts);
          return;
        } catch {
          // fall through: a helper that printed no facts failed
        }
      }
      reject(new Error(`the fd probe failed (exit ${code}): ${err.trim().split('\n').pop() ?? ''}`));
    });
  });
}

export interface FdProber {
  /** Source facts of `fd`, charged to `uid`'s turn in the shared probe queue. */
  sourceFacts(uid: number, fd: number): Promise<SourceFacts>;
}

export function fdProber(queue: FairQueue, deadlineMs: number): FdProber {
  return {
    async sourceFacts(uid, fd) {
      const raw = await queue.run(uid, () => examine(fd, deadlineMs));
      const table = readMountTable();
      const mount = table.get(raw.mountId);
      return {
        kind: kindOf(raw.mode),
        ownerUid: raw.uid,
        fsType: fsTypeName(raw.magic),
        fsDenied: isKernelFilesystem(raw.magic),
        ...(raw.path ? { path: raw.path } : {}),
        inBrokerNamespace: mount !== undefined,
        mountOptions: mount ? mount.options.filter((o) => ['ro', 'nosuid', 'nodev', 'noexec'].includes(o)) : [],
        mountsBelow: mount && raw.path ? mountsBelow(table, mount.id, raw.path) : [],
      };
    },
  };
}
