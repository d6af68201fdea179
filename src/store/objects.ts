// The content-addressed object store: objects/xx/rest named by their
// fs-verity digest, root-owned, mode 0444, in root-only directories (users
// reach content only through composefs mounts). Objects enter only as files
// an upload helper hashed, wrote and synced in tmp/, published by a rename
// once verified, so a crash never leaves a wrong or partial object under a
// digest name. Which objects are present is recorded in the store database.
import { closeSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, unlinkSync } from 'node:fs';
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

export class ObjectStore {
  readonly objectsDir: string;
  readonly tmpDir: string;

  constructor(readonly root: string) {
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
    renameSync(join(this.tmpDir, tmpName), join(this.objectsDir, objectPath(digest)));
  }

  /** Removes the tmp files whose names start with `prefix.` (what one upload left that was not published). */
  dropTmp(prefix: string): void {
    for (const f of readdirSync(this.tmpDir)) if (f.startsWith(`${prefix}.`)) rmSync(join(this.tmpDir, f), { force: true });
  }

  remove(digest: string): void {
    try {
      unlinkSync(join(this.objectsDir, objectPath(digest)));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }

  /** Every digest in the store (for reconciliation at start). */
  *list(): Generator<string> {
    for (const prefix of readdirSync(this.objectsDir)) {
      for (const rest of readdirSync(join(this.objectsDir, prefix))) if (digestPattern.test(prefix + rest)) yield prefix + rest;
    }
  }
}
