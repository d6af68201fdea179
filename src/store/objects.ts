// The content-addressed object store: objects/xx/rest named by their
// fs-verity digest, root-owned, mode 0444, in root-only directories (users
// reach content only through composefs mounts). Objects enter only as files
// an upload helper hashed, wrote and synced in tmp/, published by a rename
// once verified, so a crash never leaves a wrong or partial object under a
// digest name. Which objects are present is recorded in the store database.
//
// Objects no image needs any more are deleted off the event loop: their rows
// go at once (the database is the truth), their files later, a bounded batch
// of unlinks at a time on libuv's pool, so a removal of 100k objects stalls
// no other caller. A file still queued whose digest the database records
// present again (re-uploaded and published over it) is kept; a publish of a
// digest whose unlink is under way waits for it (`unlinking`). A crash with
// deletions queued leaves files no row names: the reconciliation at start
// drops them.
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { readdir, rename, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { objectPath } from '../composefs/format.js';
import * as sys from '../sys/syscalls.js';

export const digestPattern = /^[0-9a-f]{64}$/;

/** The object's path relative to the objects directory: the composefs backing path. */
export { objectPath };

const FS_IOC_ENABLE_VERITY = 0x40806685;

/**
 * Seals a published object with the kernel's fs-verity (sha256, 4 KiB blocks,
 * no salt: the same digest as computed in software), so that overlayfs with
 * verity=require checks every read against the image's metacopy digest.
 */
export function enableVerity(path: string): void {
  const arg = Buffer.alloc(128); // struct fsverity_enable_arg
  arg.writeUInt32LE(1, 0); // version
  arg.writeUInt32LE(1, 4); // FS_VERITY_HASH_ALG_SHA256
  arg.writeUInt32LE(4096, 8); // block size
  const fd = openSync(path, 'r');
  try {
    sys.ioctlBuffer(fd, FS_IOC_ENABLE_VERITY, arg);
  } catch (err) {
    if (!(err instanceof sys.SyscallError && err.code === 'EEXIST')) throw err;
  } finally {
    closeSync(fd);
  }
}

/**
 * Unlinks in flight at once: two of libuv's four threads. Each unlink is
 * kernel work (the directory, the inode, ext4's journal) that competes with
 * the front's main thread for the cores, and every other file job on the
 * pool (the log fsyncs replies wait for) queues behind what is in flight.
 * Another user's GetInfo during the deletions of a 100k-object image (bench
 * remove): p99 15.6-21.6 ms with 32 in flight, 3.6-3.9 ms with 2 (at rest
 * 2.7-3.5 ms); the deletions, which nobody waits for, take 14-16 s instead
 * of 5.
 */
export const unlinkBatch = 2;

export class ObjectStore {
  readonly objectsDir: string;
  readonly tmpDir: string;
  /** Digests whose files are to be deleted, not yet started. */
  private readonly doomed = new Set<string>();
  /** Unlinks under way, by digest. */
  private readonly inFlight = new Map<string, Promise<void>>();
  private draining: Promise<void> | undefined;

  /**
   * `isPresent`: whether the database records the object present (then a
   * queued file is the newly published one, and stays). `onDrained`: told
   * once the queue is empty, with what was deleted and what failed.
   */
  constructor(
    readonly root: string,
    private readonly isPresent: (digest: string) => boolean = () => false,
    private readonly onDrained: (report: { deleted: number; failed: string[] }) => void = () => undefined,
  ) {
    this.objectsDir = join(root, 'objects');
    this.tmpDir = join(root, 'tmp');
    mkdirSync(this.objectsDir, { recursive: true, mode: 0o700 });
    mkdirSync(this.tmpDir, { recursive: true, mode: 0o700 });
    // Every prefix directory from the start: publishing an object is then one rename.
    for (let i = 0; i < 256; i++) mkdirSync(join(this.objectsDir, i.toString(16).padStart(2, '0')), { recursive: true, mode: 0o700 });
    // Leftovers of uploads interrupted by a crash: never published, dropped.
    for (const f of readdirSync(this.tmpDir)) rmSync(join(this.tmpDir, f), { force: true });
  }

  /**
   * Gives a verified, synced file in the tmp directory (written by an upload
   * helper) its digest name. The caller has just checked, in the same turn,
   * that the object is still wanted and not yet present.
   */
  publish(tmpName: string, digest: string): void {
    renameSync(...this.publishing(tmpName, digest));
  }

  /** Whether the store has a file of the digest (a stat; no row is asked). */
  has(digest: string): boolean {
    return existsSync(join(this.objectsDir, objectPath(digest)));
  }

  /** publish, by a rename off the event loop (the caller proves the object once it resolves). */
  async publishAsync(tmpName: string, digest: string): Promise<void> {
    await rename(...this.publishing(tmpName, digest));
  }

  /** What a publish renames, from and to; refused while the digest's old file is being unlinked. */
  private publishing(tmpName: string, digest: string): [string, string] {
    if (this.inFlight.has(digest)) throw new Error(`object ${digest} is being deleted: wait for unlinking() before publishing it`);
    // Queued but not started: the rename replaces the old file, which then stays.
    this.doomed.delete(digest);
    return [join(this.tmpDir, tmpName), join(this.objectsDir, objectPath(digest))];
  }

  /** The unlink under way of the digest's file, if one is: a publish of it waits for that. */
  unlinking(digest: string): Promise<void> | undefined {
    return this.inFlight.get(digest);
  }

  /** Removes the tmp files whose names start with `prefix.` (what one upload left that was not published), off the event loop. */
  async dropTmp(prefix: string): Promise<void> {
    const names = (await readdir(this.tmpDir)).filter((f) => f.startsWith(`${prefix}.`));
    for (let i = 0; i < names.length; i += unlinkBatch) await Promise.all(names.slice(i, i + unlinkBatch).map((f) => rm(join(this.tmpDir, f), { force: true })));
  }

  /**
   * Queues the files of objects the database no longer records (their rows
   * are gone in the caller's transaction) for deletion off the event loop.
   */
  discard(digests: Iterable<string>): void {
    for (const d of digests) this.doomed.add(d);
    if (this.doomed.size === 0) return;
    // Told once idle again (idle() is true by then).
    this.draining ??= this.drain().then(
      (report) => {
        this.draining = undefined;
        this.onDrained(report);
      },
      (err: Error) => {
        this.draining = undefined;
        this.onDrained({ deleted: 0, failed: [`the deletions stopped: ${err.message}`] });
      },
    );
  }

  /** Is no deletion queued or under way? */
  idle(): boolean {
    return this.doomed.size === 0 && this.draining === undefined;
  }

  /** Resolves once every queued deletion is done (tests, benches, shutdown). */
  async drained(): Promise<void> {
    while (this.draining) await this.draining;
  }

  private async drain(): Promise<{ deleted: number; failed: string[] }> {
    const failed: string[] = [];
    let deleted = 0;
    while (this.doomed.size > 0) {
      const batch: string[] = [];
      for (const d of this.doomed) {
        this.doomed.delete(d);
        // Published again since it was queued: the file is the new object's.
        if (this.isPresent(d)) continue;
        batch.push(d);
        if (batch.length === unlinkBatch) break;
      }
      await Promise.all(
        batch.map((d) => {
          const done = unlink(join(this.objectsDir, objectPath(d))).then(
            () => void deleted++,
            (err: NodeJS.ErrnoException) => {
              if (err.code !== 'ENOENT') failed.push(`${d}: ${err.message}`);
            },
          );
          this.inFlight.set(d, done);
          return done.finally(() => this.inFlight.delete(d));
        }),
      );
    }
    return { deleted, failed };
  }

  /** Every digest in the store (for reconciliation at start). */
  *list(): Generator<string> {
    for (const prefix of readdirSync(this.objectsDir)) {
      for (const rest of readdirSync(join(this.objectsDir, prefix))) if (digestPattern.test(prefix + rest)) yield prefix + rest;
    }
  }
}
