// Read-only loop devices for EROFS images on kernels without file-backed
// EROFS (before 6.12). The device is configured with autoclear: it detaches
// by itself once the last mount of it is gone, so nothing is left behind.
import { closeSync, openSync } from 'node:fs';
import * as sys from './syscalls.js';

const LOOP_CTL_GET_FREE = 0x4c82;
const LOOP_CONFIGURE = 0x4c0a;
const LO_FLAGS_READ_ONLY = 1;
const LO_FLAGS_AUTOCLEAR = 4;
const LO_FLAGS_DIRECT_IO = 16;

/** struct loop_config: fd, block_size, struct loop_info64 (232 bytes), reserved. */
function loopConfig(backingFd: number): Buffer {
  const cfg = Buffer.alloc(4 + 4 + 232 + 64);
  cfg.writeUInt32LE(backingFd, 0);
  cfg.writeUInt32LE(4096, 4); // EROFS blocks are 4 KiB
  cfg.writeUInt32LE(LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO, 8 + 52); // info.lo_flags
  return cfg;
}

export interface LoopDevice {
  path: string;
  /** Close after the mount holds the device; autoclear detaches it later. */
  fd: number;
}

/** Attaches `image` read-only to a free loop device. */
export function attachLoop(image: string): LoopDevice {
  const backing = openSync(image, 'r');
  const control = openSync('/dev/loop-control', 'r+');
  try {
    for (let attempt = 0; attempt < 16; attempt++) {
      const n = sys.ioctlValue(control, LOOP_CTL_GET_FREE);
      const path = `/dev/loop${n}`;
      const fd = openSync(path, 'r');
      try {
        sys.ioctlBuffer(fd, LOOP_CONFIGURE, loopConfig(backing));
        return { path, fd };
      } catch (err) {
        closeSync(fd);
        // Another process took the device between GET_FREE and CONFIGURE.
        if (!(err instanceof sys.SyscallError && err.code === 'EBUSY')) throw err;
      }
    }
    throw new Error('no free loop device after 16 attempts');
  } finally {
    closeSync(control);
    closeSync(backing);
  }
}
