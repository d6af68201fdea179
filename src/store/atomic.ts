// Writing files so that a crash never leaves a wrong file under a final name:
// a temporary file in the same directory, fsync, rename, fsync the directory.
import { closeSync, fsyncSync, openSync, renameSync, writeFileSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';

export function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): void {
  const tmp = join(dirname(path), `.tmp-${randomBytes(6).toString('hex')}`);
  // Written and synced through the fd that created it: a read-only mode binds
  // only later opens (the front is not root and cannot reopen it for writing).
  const fd = openSync(tmp, 'wx', mode);
  try {
    writeFileSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  fsyncDir(dirname(path));
}

/** fsyncDir, off the event loop: an fsync can take seconds on a busy disk, and the front's loop serves everyone. */
export async function fsyncDirAsync(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** writeFileAtomic, off the event loop. */
export async function writeFileAtomicAsync(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const tmp = join(dirname(path), `.tmp-${randomBytes(6).toString('hex')}`);
  const handle = await open(tmp, 'wx', mode);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, path);
  await fsyncDirAsync(dirname(path));
}

/**
 * Durable copies of in-memory state, one file per key, written off the event
 * loop. The state changes synchronously (so decisions see it at once); each
 * write takes the state as it is when the write starts, writes to one file
 * never overlap, and a change made while one runs is written by the next.
 * `write` resolves once a write that began after the call is on disk.
 */
export class Persister {
  private readonly running = new Map<string, Promise<void>>();
  private readonly again = new Map<string, Promise<void>>();

  /** `produce` gives the file's content now, or undefined when there is nothing to keep any more (skip). */
  write(path: string, produce: () => string | Uint8Array | undefined, mode = 0o600): Promise<void> {
    const queued = this.again.get(path);
    if (queued) return queued;
    const current = this.running.get(path);
    const next = (current ?? Promise.resolve()).catch(() => undefined).then(async () => {
      this.again.delete(path);
      const data = produce();
      if (data !== undefined) await writeFileAtomicAsync(path, data, mode);
    });
    if (current) this.again.set(path, next);
    this.running.set(path, next);
    void next.finally(() => {
      if (this.running.get(path) === next) this.running.delete(path);
    }).catch(() => undefined);
    return next;
  }
}
