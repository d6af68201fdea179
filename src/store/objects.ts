// The content-addressed object store: objects/xx/rest named by their
// fs-verity digest, root-owned, mode 0444, in root-only directories (users
// reach content only through composefs mounts). Objects enter only through
// `ingest`, which hashes every byte and publishes atomically, so a crash
// never leaves a wrong or partial object under a digest name.
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { open, chmod } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { objectPath } from '../composefs/format.js';
import { FsVerityHasher } from '../verity/fsverity.js';
import { fsyncDirAsync } from './atomic.js';
import * as sys from '../sys/syscalls.js';

export const digestPattern = /^[0-9a-f]{64}$/;

/** The object's path relative to the objects directory: the composefs backing path. */
export { objectPath };

export class DigestMismatchError extends Error {}

const FS_IOC_ENABLE_VERITY = 0x40806685;

/**
 * Seals a published object with the kernel's fs-verity (sha256, 4 KiB blocks,
 * no salt: the same digest as computed in software), so that overlayfs with
 * verity=require checks every read against the image's metacopy digest.
 */
function enableVerity(path: string): void {
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
  private readonly tmpDir: string;

  /** With `verity`, every object is sealed with the kernel's fs-verity when published. */
  constructor(readonly root: string, private readonly verity = false) {
    this.objectsDir = join(root, 'objects');
    this.tmpDir = join(root, 'tmp');
    mkdirSync(this.objectsDir, { recursive: true, mode: 0o700 });
    mkdirSync(this.tmpDir, { recursive: true, mode: 0o700 });
    // Leftovers of uploads interrupted by a crash: never published, dropped.
    for (const f of readdirSync(this.tmpDir)) rmSync(join(this.tmpDir, f), { force: true });
  }

  has(digest: string): boolean {
    return existsSync(join(this.objectsDir, objectPath(digest)));
  }

  size(digest: string): number {
    return statSync(join(this.objectsDir, objectPath(digest))).size;
  }

  /**
   * Receives one object's content through `chunks` (exactly `size` bytes),
   * hashes it, and publishes it under `digest` when the hash matches. When
   * the object already exists the bytes are still hashed (proof of
   * possession) and then dropped. Throws DigestMismatchError otherwise;
   * nothing is left behind in either case. `wanted` is asked right before the
   * object is published (synchronously with it): when nothing needs the
   * object any more (its image was removed meanwhile), it is dropped.
   */
  async ingest(digest: string, size: number, chunks: AsyncIterable<Uint8Array>, wanted: () => boolean = () => true): Promise<{ stored: boolean }> {
    const tmp = join(this.tmpDir, `${digest}.${randomBytes(6).toString('hex')}`);
    const file = await open(tmp, 'wx', 0o600);
    const hasher = new FsVerityHasher();
    let received = 0;
    try {
      for await (const chunk of chunks) {
        hasher.update(chunk);
        received += chunk.length;
        await file.write(chunk);
      }
      if (received !== size) throw new DigestMismatchError(`object ${digest}: got ${received} bytes, expected ${size}`);
      const actual = hasher.digest().toString('hex');
      if (actual !== digest) throw new DigestMismatchError(`object ${digest}: its content hashes to ${actual}`);
      if (this.has(digest)) return { stored: false };
      await file.sync();
      await file.close();
      await chmod(tmp, 0o444);
      // Sealed before it gets its name: a published object is always verity-protected.
      if (this.verity) enableVerity(tmp);
      // From here to the rename nothing waits: `wanted` and publishing are one step.
      if (!wanted()) return { stored: false };
      const dir = join(this.objectsDir, digest.slice(0, 2));
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      renameSync(tmp, join(this.objectsDir, objectPath(digest)));
      await fsyncDirAsync(dir);
      return { stored: true };
    } finally {
      await file.close().catch(() => undefined);
      rmSync(tmp, { force: true });
    }
  }

  remove(digest: string): void {
    try {
      unlinkSync(join(this.objectsDir, objectPath(digest)));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }

  /** Every digest in the store (for garbage collection). */
  *list(): Generator<string> {
    for (const prefix of readdirSync(this.objectsDir)) {
      for (const rest of readdirSync(join(this.objectsDir, prefix))) yield prefix + rest;
    }
  }
}
