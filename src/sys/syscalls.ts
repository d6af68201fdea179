// The only place that calls into the kernel directly: the new mount API,
// pidfds, memfd seals, fd and socket checks, prctl, through koffi (a prebuilt FFI: no compiler at install
// time). Each wrapper returns a number or throws SyscallError with the errno
// name; none of them knows any policy.
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';

const require = createRequire(import.meta.url);
// koffi is CommonJS with a native prebuilt module.
const koffi = require('koffi') as typeof import('koffi');

const libc = koffi.load('libc.so.6');
const syscall = libc.func('long syscall(long nr, ...)');
const errnoLocation = libc.func('int *__errno_location()');
const closeFd = libc.func('int close(int fd)');
const execvpFn = libc.func('int execvp(const char *file, const char **argv)');
const fcntlFn = libc.func('int fcntl(int fd, int cmd, ...)');
const mallocTrimFn = libc.func('int malloc_trim(size_t pad)');
const F_SETFD = 2;
const FD_CLOEXEC = 1;

/**
 * Marks an fd received from elsewhere (a bus message, a channel frame)
 * close-on-exec, so that no helper process this one starts inherits it.
 */
export function setCloexec(fd: number): void {
  check('fcntl(F_SETFD)', fcntlFn(fd, F_SETFD, 'int', FD_CLOEXEC) as number);
}

/**
 * Gives the free pages of every glibc malloc arena back to the system
 * (malloc_trim(0)): freed memory inside an arena otherwise stays resident
 * until something else is allocated there. Not a syscall of its own; it
 * madvises the free ranges away.
 */
export function mallocTrim(): void {
  mallocTrimFn(0);
}

const MountAttrStruct = koffi.struct('mg_mount_attr', {
  attr_set: 'uint64',
  attr_clr: 'uint64',
  propagation: 'uint64',
  userns_fd: 'uint64',
});

// x86_64 and aarch64 share these numbers (the new mount API came after the
// unified syscall table).
const NR = { memfd_create: 319, open_tree: 428, move_mount: 429, fsopen: 430, fsconfig: 431, fsmount: 432, pidfd_open: 434, pidfd_getfd: 438, mount_setattr: 442 } as const;

export const AT_FDCWD = -100;
export const AT_EMPTY_PATH = 0x1000;
export const AT_RECURSIVE = 0x8000;
export const OPEN_TREE_CLONE = 1;
export const OPEN_TREE_CLOEXEC = 0o2000000;
export const MOVE_MOUNT_F_EMPTY_PATH = 0x4;
export const FSOPEN_CLOEXEC = 1;
export const FSMOUNT_CLOEXEC = 1;
export const FSCONFIG = { SET_FLAG: 0, SET_STRING: 1, SET_BINARY: 2, SET_PATH: 3, SET_PATH_EMPTY: 4, SET_FD: 5, CMD_CREATE: 6, CMD_RECONFIGURE: 7 } as const;
export const MOUNT_ATTR = { RDONLY: 0x1, NOSUID: 0x2, NODEV: 0x4, NOEXEC: 0x8, NOSYMFOLLOW: 0x200000, IDMAP: 0x100000 } as const;

const errnoNames = new Map<number, string>(Object.entries(osConstants.errno).map(([name, num]) => [num, name]));

export class SyscallError extends Error {
  readonly syscall: string;
  readonly errno: number;
  readonly code: string;
  constructor(call: string, errno: number) {
    const code = errnoNames.get(errno) ?? `errno ${errno}`;
    super(`${call} failed: ${code}`);
    this.name = 'SyscallError';
    this.syscall = call;
    this.errno = errno;
    this.code = code;
  }
}

function errno(): number {
  return koffi.decode(errnoLocation(), 'int') as number;
}

function check(call: string, result: number | bigint): number {
  const r = Number(result);
  if (r < 0) throw new SyscallError(call, errno());
  return r;
}

/** open_tree(fd, "", AT_EMPTY_PATH | OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC): a detached copy of the mount at fd. */
export function openTreeClone(fd: number, recursive = false): number {
  const flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0);
  return check('open_tree', syscall(NR.open_tree, 'int', fd, 'str', '', 'uint', flags));
}

/** mount_setattr(fd, "", AT_EMPTY_PATH, {set, clear, userns}) on a mount fd. */
export function mountSetattr(fd: number, set: number, clear = 0, usernsFd?: number): void {
  const attr = { attr_set: set, attr_clr: clear, propagation: 0, userns_fd: usernsFd ?? 0 };
  check('mount_setattr', syscall(NR.mount_setattr, 'int', fd, 'str', '', 'uint', AT_EMPTY_PATH, koffi.pointer(MountAttrStruct), attr, 'size_t', koffi.sizeof(MountAttrStruct)));
}

/** move_mount(fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH): attach a detached mount at a path. */
export function moveMount(fd: number, target: string): void {
  check('move_mount', syscall(NR.move_mount, 'int', fd, 'str', '', 'int', AT_FDCWD, 'str', target, 'uint', MOVE_MOUNT_F_EMPTY_PATH));
}

export function fsopen(fsType: string): number {
  return check('fsopen', syscall(NR.fsopen, 'str', fsType, 'uint', FSOPEN_CLOEXEC));
}

/** fsconfig with a string value (or a flag when value is undefined). */
export function fsconfigString(fsFd: number, key: string, value?: string): void {
  if (value === undefined) check('fsconfig', syscall(NR.fsconfig, 'int', fsFd, 'uint', FSCONFIG.SET_FLAG, 'str', key, 'void *', null, 'int', 0));
  else check('fsconfig', syscall(NR.fsconfig, 'int', fsFd, 'uint', FSCONFIG.SET_STRING, 'str', key, 'str', value, 'int', 0));
}

/** fsconfig(FSCONFIG_SET_FD): hand the filesystem an open file, e.g. an overlay layer mount fd. */
export function fsconfigFd(fsFd: number, key: string, fd: number): void {
  check('fsconfig', syscall(NR.fsconfig, 'int', fsFd, 'uint', FSCONFIG.SET_FD, 'str', key, 'void *', null, 'int', fd));
}

export function fsconfigCreate(fsFd: number): void {
  check('fsconfig', syscall(NR.fsconfig, 'int', fsFd, 'uint', FSCONFIG.CMD_CREATE, 'void *', null, 'void *', null, 'int', 0));
}

export function fsmount(fsFd: number, attrs = 0): number {
  return check('fsmount', syscall(NR.fsmount, 'int', fsFd, 'uint', FSMOUNT_CLOEXEC, 'uint', attrs));
}

export function pidfdOpen(pid: number): number {
  return check('pidfd_open', syscall(NR.pidfd_open, 'int', pid, 'uint', 0));
}


export function close(fd: number): void {
  check('close', closeFd(fd) as number);
}

/** Replaces this process with `file` (PATH searched). Returns only by throwing. */
export function execvp(file: string, argv: string[]): never {
  // Node marks fds 0-2 close-on-exec; the new program must keep its stdio.
  for (const fd of [0, 1, 2]) fcntlFn(fd, F_SETFD, 'int', 0);
  execvpFn(file, [...argv, null]);
  throw new SyscallError(`execvp ${file}`, errno());
}

const ioctlFn = libc.func('int ioctl(int fd, unsigned long req, _Inout_ uint8_t *arg)');

/** ioctl(fd, req, buf) with an in/out buffer argument. */
export function ioctlBuffer(fd: number, request: number, buf: Buffer): void {
  check('ioctl', ioctlFn(fd, request, buf) as number);
}

const flockFn = libc.func('int flock(int fd, int operation)');
export const LOCK_SH = 1;
export const LOCK_EX = 2;
const LOCK_NB = 4;

/** flock(2), blocking; with `tryOnly`, returns false instead of waiting when the lock is held. */
export function flock(fd: number, operation: number, tryOnly = false): boolean {
  const r = flockFn(fd, operation | (tryOnly ? LOCK_NB : 0)) as number;
  if (r === 0) return true;
  const e = errno();
  if (tryOnly && e === osConstants.errno.EWOULDBLOCK) return false;
  throw new SyscallError('flock', e);
}

/** Clears O_NONBLOCK (0o4000) on the open file behind fd (node-pty opens both ends of a pty non-blocking). */
export function clearNonblock(fd: number): void {
  const F_GETFL = 3;
  const F_SETFL = 4;
  const flags = check('fcntl(F_GETFL)', Number(fcntlFn(fd, F_GETFL, 'int', 0)));
  check('fcntl(F_SETFL)', Number(fcntlFn(fd, F_SETFL, 'int', flags & ~0o4000)));
}

const pipe2Fn = libc.func('int pipe2(_Out_ int *fds, int flags)');
const O_CLOEXEC = 0o2000000;

/** pipe2(O_CLOEXEC): [read end, write end]. */
export function pipe(): [number, number] {
  const fds = [0, 0];
  check('pipe2', pipe2Fn(fds, O_CLOEXEC) as number);
  return [fds[0]!, fds[1]!];
}

const ioctlValueFn = libc.func('int ioctl(int fd, unsigned long req, ...)');

/** ioctl(fd, req, value) with an integer argument; returns the ioctl's result. */
export function ioctlValue(fd: number, request: number, value = 0): number {
  return check('ioctl', ioctlValueFn(fd, request, 'unsigned long', value) as number);
}

/**
 * The terminal end (slave) of the pty whose master is `master`, opened from
 * the master itself (TIOCGPTPEER, after TIOCSPTLCK unlocks it): no path is
 * looked up, so it works for a master of a devpts instance this process sees
 * only through /proc/PID/root. Close-on-exec, not a controlling terminal.
 */
export function ptyPeer(master: number): number {
  const TIOCSPTLCK = 0x40045431;
  const TIOCGPTPEER = 0x5441;
  const [O_RDWR, O_NOCTTY] = [2, 0o400];
  ioctlBuffer(master, TIOCSPTLCK, Buffer.alloc(4)); // *arg = 0: unlocked
  return ioctlValue(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
}

const umount2Fn = libc.func('int umount2(const char *target, int flags)');
export const MNT_DETACH = 2;

export function umount2(target: string, flags = 0): void {
  check(`umount2 ${target}`, umount2Fn(target, flags) as number);
}

/**
 * mount_setattr's propagation field: make the mount at fd private (nothing
 * propagates in or out), with `recursive` every mount of its tree too.
 */
export function makePrivate(fd: number, recursive = false): void {
  const MS_PRIVATE = 1 << 18;
  const attr = { attr_set: 0, attr_clr: 0, propagation: MS_PRIVATE, userns_fd: 0 };
  check('mount_setattr', syscall(NR.mount_setattr, 'int', fd, 'str', '', 'uint', AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), koffi.pointer(MountAttrStruct), attr, 'size_t', koffi.sizeof(MountAttrStruct)));
}

const chrootFn = libc.func('int chroot(const char *path)');

export function chroot(path: string): void {
  check(`chroot ${path}`, chrootFn(path) as number);
}

const F_GETPIPE_SZ = 1032;
const F_ADD_SEALS = 1033;
const F_GET_SEALS = 1034;
export const F_SEAL = { SEAL: 0x1, SHRINK: 0x2, GROW: 0x4, WRITE: 0x8 } as const;
/** The seals that make a memfd's contents immutable: what the broker requires of a manifest. */
export const IMMUTABLE_SEALS = F_SEAL.SHRINK | F_SEAL.GROW | F_SEAL.WRITE;
const MFD_CLOEXEC = 1;
const MFD_ALLOW_SEALING = 2;
const writeFn = libc.func('long write(int fd, const uint8_t *buf, size_t count)');
const lseekFn = libc.func('long lseek(int fd, long offset, int whence)');

/** A new, empty memfd that can be sealed (close-on-exec): write it, then `sealImmutable`. */
export function memfdCreate(name: string): number {
  return check('memfd_create', syscall(NR.memfd_create, 'str', name, 'uint', MFD_CLOEXEC | MFD_ALLOW_SEALING));
}

/** Seals a memfd against writing, growing and shrinking and against further seal changes, and rewinds it. */
export function sealImmutable(fd: number): void {
  check('fcntl(F_ADD_SEALS)', fcntlFn(fd, F_ADD_SEALS, 'int', IMMUTABLE_SEALS | F_SEAL.SEAL) as number);
  // Back to the start, so a reader that reads from the offset sees it all.
  check('lseek', Number(lseekFn(fd, 0, 0)));
}

/**
 * A memfd holding `data`, sealed against writing, growing and shrinking (and
 * against further seal changes): a reader can never be stalled by it, and its
 * bytes cannot change between a check and a use.
 */
export function sealedMemfd(name: string, data: Uint8Array): number {
  const fd = memfdCreate(name);
  try {
    let at = 0;
    while (at < data.length) {
      const chunk = data.subarray(at, Math.min(data.length, at + (1 << 24)));
      at += check('write', writeFn(fd, chunk, chunk.length) as number);
    }
    sealImmutable(fd);
    return fd;
  } catch (err) {
    closeFd(fd);
    throw err;
  }
}

/** The seals of a memfd; undefined for any other kind of file (EINVAL). Never blocks: no filesystem is asked. */
export function fileSeals(fd: number): number | undefined {
  const r = Number(fcntlFn(fd, F_GET_SEALS, 'int', 0));
  if (r >= 0) return r;
  const e = errno();
  // EINVAL: not a memfd; EBADF: an O_PATH fd, which is not one either.
  if (e === osConstants.errno.EINVAL || e === osConstants.errno.EBADF) return undefined;
  throw new SyscallError('fcntl(F_GET_SEALS)', e);
}

/**
 * Is fd (an open fd) a pipe or FIFO? F_GETPIPE_SZ works on nothing else, and
 * answers EBADF for every other kind of file; no filesystem is asked.
 */
export function isPipe(fd: number): boolean {
  return Number(fcntlFn(fd, F_GETPIPE_SZ, 'int', 0)) >= 0;
}

const getsockoptFn = libc.func('int getsockopt(int fd, int level, int name, _Out_ int *value, _Inout_ uint32_t *len)');
const SOL_SOCKET = 1;
const SO_TYPE = 3;
const SO_DOMAIN = 39;
const SO_ACCEPTCONN = 30;
export const AF_UNIX = 1;
export const SOCK_STREAM = 1;

/** A socket's domain, type and whether it listens; undefined when fd is not a socket (ENOTSOCK). */
export function socketKind(fd: number): { domain: number; type: number; listening: boolean } | undefined {
  const get = (name: number): number | undefined => {
    const value = [0];
    const len = [4];
    if ((getsockoptFn(fd, SOL_SOCKET, name, value, len) as number) === 0) return value[0]!;
    const e = errno();
    // ENOTSOCK: not a socket; EBADF: an O_PATH fd, which cannot be used as one.
    if (e === osConstants.errno.ENOTSOCK || e === osConstants.errno.EBADF) return undefined;
    throw new SyscallError('getsockopt', e);
  };
  const type = get(SO_TYPE);
  if (type === undefined) return undefined;
  return { domain: get(SO_DOMAIN)!, type, listening: get(SO_ACCEPTCONN) === 1 };
}

const getsockoptCredFn = libc.func('int getsockopt(int fd, int level, int name, _Out_ int32_t *cred, _Inout_ uint32_t *len)');
const SO_PEERCRED = 17;

/** SO_PEERCRED of a connected AF_UNIX socket: the peer's pid, uid and gid when it connected (the kernel's word, not the peer's). */
export function peerCredentials(fd: number): { pid: number; uid: number; gid: number } {
  const cred = [0, 0, 0];
  check('getsockopt(SO_PEERCRED)', getsockoptCredFn(fd, SOL_SOCKET, SO_PEERCRED, cred, [12]) as number);
  return { pid: cred[0]!, uid: cred[1]! >>> 0, gid: cred[2]! >>> 0 };
}

const F_DUPFD_CLOEXEC = 1030;

/** A close-on-exec duplicate of `fd` (the lowest free number at 3 or above). */
export function dupCloexec(fd: number): number {
  return check('fcntl(F_DUPFD_CLOEXEC)', Number(fcntlFn(fd, F_DUPFD_CLOEXEC, 'int', 3)));
}

const getpeernameFn = libc.func('int getpeername(int fd, _Out_ uint8_t *addr, _Inout_ uint32_t *len)');

/** Is the socket connected to a peer? (getpeername: ENOTCONN otherwise.) */
export function socketConnected(fd: number): boolean {
  const addr = Buffer.alloc(128);
  return (getpeernameFn(fd, addr, [addr.length]) as number) === 0;
}

const F_GETFL = 3;
const O_ACCMODE = 3;
const O_WRONLY = 1;
const O_PATH_FLAG = 0o10000000;

/** Can this fd be read from? Not when it was opened write-only or O_PATH. Asks the fd, never a filesystem. */
export function readableFd(fd: number): boolean {
  const flags = check('fcntl(F_GETFL)', Number(fcntlFn(fd, F_GETFL, 'int', 0)));
  return (flags & O_PATH_FLAG) === 0 && (flags & O_ACCMODE) !== O_WRONLY;
}

/** pidfd_getfd: a duplicate, in this process, of fd `targetFd` of the process behind `pidfd`. */
export function pidfdGetfd(pidfd: number, targetFd: number): number {
  return check('pidfd_getfd', syscall(NR.pidfd_getfd, 'int', pidfd, 'int', targetFd, 'uint', 0));
}

const socketpairFn = libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *fds)');
const SOCK_CLOEXEC = 0o2000000;

/** socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC): two connected ends. */
export function socketpair(): [number, number] {
  const fds = [0, 0];
  check('socketpair', socketpairFn(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) as number);
  return [fds[0]!, fds[1]!];
}

const socketFn = libc.func('int socket(int domain, int type, int protocol)');
const connectFn = libc.func('int connect(int fd, const uint8_t *addr, uint32_t len)');

/** A blocking connect of a new AF_UNIX stream socket (close-on-exec) to the socket at `path`. */
export function connectUnix(path: string): number {
  const name = Buffer.from(path);
  if (name.length >= 108 || name.includes(0)) throw new SyscallError('connect', osConstants.errno.ENAMETOOLONG);
  const addr = Buffer.alloc(2 + name.length + 1);
  addr.writeUInt16LE(AF_UNIX, 0);
  name.copy(addr, 2);
  const fd = check('socket', socketFn(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) as number);
  if ((connectFn(fd, addr, addr.length) as number) !== 0) {
    const e = errno();
    closeFd(fd);
    throw new SyscallError('connect', e);
  }
  return fd;
}

const prctlFn = libc.func('int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5)');
const PR_SET_NO_NEW_PRIVS = 38;

/** This process and everything it starts can never gain privileges (set-id bits and file capabilities are ignored). */
export function noNewPrivileges(): void {
  check('prctl(PR_SET_NO_NEW_PRIVS)', prctlFn(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as number);
}


const OpenHow = koffi.struct('mg_open_how', { flags: 'uint64', mode: 'uint64', resolve: 'uint64' });
const RESOLVE_NO_SYMLINKS = 0x04;
const RESOLVE_NO_MAGICLINKS = 0x02;
const O_PATH = 0o10000000;
const O_NOFOLLOW_FLAG = 0o400000;

/**
 * openat2(AT_FDCWD, path, O_PATH | O_NOFOLLOW | O_CLOEXEC, RESOLVE_NO_SYMLINKS): a
 * path fd (a trailing symlink is opened itself),
 * refusing any symlink on the way (ELOOP). Where a seccomp filter refuses
 * openat2 with ENOSYS, the same walk is done by hand (openPathNoSymlinksByWalk):
 * systemd's RestrictSUIDSGID= cannot look into openat2's struct for the mode
 * and refuses the call whole (measured under systemd 252).
 */
export function openPathNoSymlinks(path: string): number {
  const how = { flags: O_PATH | O_CLOEXEC | O_NOFOLLOW_FLAG, mode: 0, resolve: RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
  try {
    return check(`openat2 ${path}`, syscall(437, 'int', AT_FDCWD, 'str', path, koffi.pointer(OpenHow), how, 'size_t', koffi.sizeof(OpenHow)));
  } catch (err) {
    if (!(err instanceof SyscallError) || err.code !== 'ENOSYS') throw err;
  }
  return openPathNoSymlinksByWalk(path);
}

const openatFn = libc.func('int openat(int dirfd, const char *path, int flags, ...)');
const O_DIRECTORY_FLAG = 0o200000;

/**
 * What openPathNoSymlinks asks of openat2, one component at a time: an
 * absolute path without "." or ".." components, each directory opened
 * O_PATH | O_NOFOLLOW | O_DIRECTORY below the last (a symlink there fails
 * with ENOTDIR where openat2 says ELOOP), the last component O_PATH |
 * O_NOFOLLOW: a symlink there comes back as an fd of the link itself, as
 * from openat2 with these flags (callers check what they opened).
 */
export function openPathNoSymlinksByWalk(path: string): number {
  const parts = path.split('/').filter((p) => p !== '');
  if (!path.startsWith('/') || parts.some((p) => p === '.' || p === '..')) throw new SyscallError(`openat ${path}`, osConstants.errno.EINVAL);
  let fd = check('openat /', openatFn(AT_FDCWD, '/', O_PATH | O_CLOEXEC | O_DIRECTORY_FLAG, 'int', 0) as number);
  try {
    parts.forEach((part, i) => {
      const flags = O_PATH | O_CLOEXEC | O_NOFOLLOW_FLAG | (i < parts.length - 1 ? O_DIRECTORY_FLAG : 0);
      const next = check(`openat ${path}`, openatFn(fd, part, flags, 'int', 0) as number);
      close(fd);
      fd = next;
    });
    return fd;
  } catch (err) {
    close(fd);
    throw err;
  }
}

const PR_SET_PDEATHSIG = 1;
const SIGKILL = 9;

/**
 * This process is killed when the process that started it dies (a helper
 * never outlives its parent). Returns false when the parent is gone already.
 */
export function dieWithParent(parent: number): boolean {
  check('prctl(PR_SET_PDEATHSIG)', prctlFn(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) as number);
  return process.ppid === parent;
}

const llistxattrFn = libc.func('long llistxattr(const uint8_t *path, uint8_t *list, size_t size)');
const lgetxattrFn = libc.func('long lgetxattr(const uint8_t *path, const uint8_t *name, uint8_t *value, size_t size)');

function cPath(path: string | Buffer): Buffer {
  const bytes = typeof path === 'string' ? Buffer.from(path) : path;
  if (bytes.includes(0)) throw new SyscallError('xattr', osConstants.errno.EINVAL);
  return Buffer.concat([bytes, Buffer.alloc(1)]);
}

/** Asks for a size, then fills a buffer that large; again if the value grew meanwhile (ERANGE). */
function sizedRead(call: string, read: (buf: Buffer | null, size: number) => number): Buffer {
  for (let attempt = 0; attempt < 8; attempt++) {
    const size = check(call, read(null, 0));
    if (size === 0) return Buffer.alloc(0);
    const buf = Buffer.alloc(size);
    const got = read(buf, size);
    if (got >= 0) return buf.subarray(0, got);
    const e = errno();
    if (e !== osConstants.errno.ERANGE) throw new SyscallError(call, e);
  }
  throw new SyscallError(call, osConstants.errno.ERANGE);
}

/**
 * The names of the extended attributes of `path` itself (not a symlink's
 * target), as the kernel lists them for this process (trusted.* only for
 * CAP_SYS_ADMIN). A filesystem without xattrs gives none.
 */
export function listXattrs(path: string | Buffer): Buffer[] {
  const p = cPath(path);
  let list: Buffer;
  try {
    list = sizedRead('llistxattr', (buf, size) => Number(llistxattrFn(p, buf, size)));
  } catch (err) {
    if (err instanceof SyscallError && err.code === 'EOPNOTSUPP') return [];
    throw err;
  }
  const names: Buffer[] = [];
  for (let at = 0; at < list.length;) {
    const end = list.indexOf(0, at);
    const stop = end < 0 ? list.length : end;
    if (stop > at) names.push(Buffer.from(list.subarray(at, stop)));
    at = stop + 1;
  }
  return names;
}

/** The value of extended attribute `name` of `path` itself (not a symlink's target). */
export function getXattr(path: string | Buffer, name: Buffer): Buffer {
  const p = cPath(path);
  const n = Buffer.concat([name, Buffer.alloc(1)]);
  return sizedRead('lgetxattr', (buf, size) => Number(lgetxattrFn(p, n, buf, size)));
}

const syncfsFn = libc.func('int syncfs(int fd)');

/** syncfs: everything written to the filesystem that holds fd is on disk (one call for a batch of files, instead of an fsync each). */
export function syncfs(fd: number): void {
  check('syncfs', syncfsFn(fd) as number);
}

/**
 * syncfs on a thread of the pool, so the caller's thread goes on (an upload
 * helper keeps its hashing threads fed while a batch is synced). The errno of
 * a failure stays on that thread: the error says only that it failed.
 */
export function syncfsAsync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    (syncfsFn as unknown as { async: (fd: number, cb: (err: unknown, res: number) => void) => void }).async(fd, (err, res) => {
      if (err) reject(err instanceof Error ? err : new Error(String(err)));
      else if (res !== 0) reject(new Error('syncfs failed (its errno stays on the pool thread)'));
      else resolve();
    });
  });
}
