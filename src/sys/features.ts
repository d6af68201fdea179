// Kernel feature probes, run once when the broker starts and reported by
// GetInfo. Each probe does the smallest real thing that tells the answer.
import { closeSync, constants, openSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
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

// O_TMPFILE (with O_DIRECTORY, as the kernel defines it): a nameless file in
// a directory. Node's fs.constants lacks it on some builds.
const O_TMPFILE = 0o20000000 | constants.O_DIRECTORY;

/**
 * A nameless regular file of `size` zero bytes on the file system of `dir`:
 * the probes write nothing by name, so no one who can write in `dir` (the
 * state directory belongs to the front's user) can redirect a write of root's.
 */
function scratchFile(dir: string, size: number): number {
  const fd = openSync(dir, O_TMPFILE | constants.O_RDWR, 0o600);
  writeSync(fd, Buffer.alloc(size));
  return fd;
}

function probeFileBackedErofs(dir: string): boolean {
  const image = scratchFile(dir, 4096);
  const fs = sys.fsopen('erofs');
  try {
    // The kernel opens the source by path; the magic link reaches the nameless file.
    sys.fsconfigString(fs, 'source', `/proc/self/fd/${image}`);
    sys.fsconfigCreate(fs);
    return true;
  } catch (err) {
    // A kernel without file-backed EROFS wants a block device (ENOTBLK); one
    // with it reads the file and finds no superblock in zeros (EINVAL).
    return err instanceof sys.SyscallError && err.code === 'EINVAL';
  } finally {
    closeSync(fs);
    closeSync(image);
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
  const fd = scratchFile(dir, 1);
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

/**
 * Probes on the file system of `where`, which must be the broker's state
 * directory: images are mounted from there, and whether EROFS can mount a
 * file depends on that file system (measured on 6.18: a file on tmpfs gets
 * ENOTBLK, one on ext4 the expected EINVAL; under systemd the runtime
 * directory /run/mountgate is tmpfs, so probing there reported no
 * file-backed EROFS on every real host).
 */
export async function probeFeatures(userns: UserNamespaceCache, where = tmpdir()): Promise<KernelFeatures> {
  return {
    fileBackedErofs: probeFileBackedErofs(where),
    idmappedMounts: await probeIdmap(where, userns),
    fsVerity: probeVerity(where),
    overlayDataOnly: probeOverlayDataOnly(where),
  };
}
