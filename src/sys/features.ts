// Kernel feature probes, run once when the broker starts and reported by
// GetInfo. Each probe does the smallest real thing that tells the answer.
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as sys from './syscalls.js';
import { UserNamespaceCache } from './userns.js';

const FS_IOC_MEASURE_VERITY = 0xc0046686;

export interface KernelFeatures {
  /** EROFS can mount a regular file directly (6.12+), no loop device needed. */
  fileBackedErofs: boolean;
  /** mount_setattr(MOUNT_ATTR_IDMAP) works on a local directory. */
  idmappedMounts: boolean;
  /** The store's filesystem supports fs-verity. */
  fsVerity: boolean;
  /** overlayfs accepts data-only lower layers (datadir+). */
  overlayDataOnly: boolean;
}

function attempt(fn: () => void): boolean {
  try {
    fn();
    return true;
  } catch {
    return false;
  }
}

function probeFileBackedErofs(dir: string): boolean {
  const image = join(dir, 'empty.img');
  writeFileSync(image, Buffer.alloc(4096));
  const fs = sys.fsopen('erofs');
  try {
    sys.fsconfigString(fs, 'source', image);
    sys.fsconfigCreate(fs);
    return true;
  } catch (err) {
    // A kernel without file-backed EROFS wants a block device (ENOTBLK); one
    // with it reads the file and finds no superblock in zeros (EINVAL).
    return err instanceof sys.SyscallError && err.code === 'EINVAL';
  } finally {
    closeSync(fs);
  }
}

async function probeIdmap(dir: string, userns: UserNamespaceCache): Promise<boolean> {
  try {
    const ns = await userns.get([{ from: 0, to: 0, count: 1 }], [{ from: 0, to: 0, count: 1 }]);
    const dfd = openSync(dir, 'r');
    try {
      const m = sys.openTreeClone(dfd);
      try {
        sys.mountSetattr(m, sys.MOUNT_ATTR.IDMAP, 0, ns);
        return true;
      } finally {
        closeSync(m);
      }
    } finally {
      closeSync(dfd);
    }
  } catch {
    return false;
  }
}

function probeVerity(dir: string): boolean {
  const file = join(dir, 'verity-probe');
  writeFileSync(file, 'x');
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(4 + 64);
    buf.writeUInt16LE(64, 2); // digest_size: room for a sha512 digest
    sys.ioctlBuffer(fd, FS_IOC_MEASURE_VERITY, buf);
    return true;
  } catch (err) {
    // ENODATA: supported, just not enabled on this file. EOPNOTSUPP or ENOTTY: not supported.
    return err instanceof sys.SyscallError && err.code === 'ENODATA';
  } finally {
    closeSync(fd);
  }
}

function probeOverlayDataOnly(dir: string): boolean {
  const fs = sys.fsopen('overlay');
  try {
    return attempt(() => sys.fsconfigString(fs, 'datadir+', dir));
  } finally {
    closeSync(fs);
  }
}

/** Probes in a scratch directory under `where` (the broker's state dir: the store's filesystem). */
export async function probeFeatures(userns: UserNamespaceCache, where = tmpdir()): Promise<KernelFeatures> {
  const dir = mkdtempSync(join(where, '.probe-'));
  try {
    return {
      fileBackedErofs: probeFileBackedErofs(dir),
      idmappedMounts: await probeIdmap(dir, userns),
      fsVerity: probeVerity(dir),
      overlayDataOnly: probeOverlayDataOnly(dir),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
