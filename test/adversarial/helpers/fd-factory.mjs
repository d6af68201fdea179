// Fds of every kind a caller can pass over D-Bus, made by the probe client
// (as the test user) straight from libc: sockets of each type, socketpair
// ends, a listening socket, pipe ends, FIFOs nobody writes, /dev/zero, O_PATH
// fds, memfds sealed or not (sparse ones of any size), regular files, and
// directories. Each maker returns { fd, keep: [fds the caller must hold open
// meanwhile], close() }.
import { closeSync, existsSync, openSync, unlinkSync, writeFileSync, constants } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';

export function fdFactory(pkg) {
  const require = createRequire(join(pkg, 'package.json'));
  const koffi = require('koffi');
  const libc = koffi.load('libc.so.6');
  const socketFn = libc.func('int socket(int domain, int type, int protocol)');
  const socketpairFn = libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)');
  const bindFn = libc.func('int bind(int fd, const uint8_t *addr, uint32_t len)');
  const listenFn = libc.func('int listen(int fd, int backlog)');
  const openFn = libc.func('int open(const char *path, int flags, ...)');
  const memfdFn = libc.func('int memfd_create(const char *name, unsigned int flags)');
  const ftruncateFn = libc.func('int ftruncate(int fd, int64_t length)');
  const writeFn = libc.func('long write(int fd, const uint8_t *buf, size_t count)');
  const fcntlFn = libc.func('int fcntl(int fd, int cmd, ...)');
  const pipe2Fn = libc.func('int pipe2(_Out_ int *fds, int flags)');
  const errnoFn = libc.func('int *__errno_location()');
  const errno = () => koffi.decode(errnoFn(), 'int');
  const ok = (what, r) => {
    if (Number(r) < 0) throw new Error(`${what} failed: errno ${errno()}`);
    return Number(r);
  };
  const AF_UNIX = 1;
  const SOCK = { stream: 1, dgram: 2, seqpacket: 5 };
  const O_PATH = 0o10000000;
  const F_ADD_SEALS = 1033;
  const SEAL = { SEAL: 1, SHRINK: 2, GROW: 4, WRITE: 8 };
  const MFD_ALLOW_SEALING = 2;
  const closer = (fds) => () => fds.forEach((fd) => { try { closeSync(fd); } catch { /* closed */ } });

  const one = (fd, keep = []) => ({ fd, keep, close: closer([fd, ...keep]) });

  function memfd(data, { size, seals = SEAL.WRITE | SEAL.GROW | SEAL.SHRINK } = {}) {
    const fd = ok('memfd_create', memfdFn('probe-manifest', MFD_ALLOW_SEALING));
    const buf = Buffer.from(data ?? '');
    for (let at = 0; at < buf.length;) {
      const chunk = buf.subarray(at, Math.min(buf.length, at + (1 << 24)));
      at += ok('write', writeFn(fd, chunk, chunk.length));
    }
    // A sparse tail: size bytes in all, with no memory behind the zeros.
    if (size !== undefined && size > buf.length) ok('ftruncate', ftruncateFn(fd, size));
    if (seals) ok('F_ADD_SEALS', fcntlFn(fd, F_ADD_SEALS, 'int', seals));
    return one(fd);
  }

  /** spec: { kind, path?, data?, size? }. */
  function make(spec, ctx = {}) {
    switch (spec.kind) {
      case 'dir': return one(openSync(spec.path, constants.O_RDONLY | constants.O_DIRECTORY));
      case 'file': return one(openSync(spec.path, constants.O_RDONLY));
      case 'file-wronly': return one(openSync(spec.path, constants.O_WRONLY));
      case 'file-data': {
        // An unlinked temp file holding data (sparse up to size): the client's old way of sending a manifest.
        const path = join(spec.dir ?? '/tmp', `probe-${process.pid}-${Math.random().toString(16).slice(2)}`);
        writeFileSync(path, spec.data ?? '', { mode: 0o600 });
        if (spec.size) execFileSync('truncate', ['-s', String(spec.size), path]);
        const fd = openSync(path, constants.O_RDONLY);
        unlinkSync(path);
        return one(fd);
      }
      case 'opath-dir':
      case 'opath-file': return one(ok('open O_PATH', openFn(spec.path, O_PATH | constants.O_CLOEXEC, 'int', 0)));
      case 'devzero': return one(openSync('/dev/zero', constants.O_RDONLY));
      case 'fifo-rdwr':
      case 'fifo-unwritten': {
        if (!existsSync(spec.path)) execFileSync('mkfifo', [spec.path]);
        // O_NONBLOCK read end: opens at once; nobody ever writes it.
        const flags = spec.kind === 'fifo-rdwr' ? constants.O_RDWR : constants.O_RDONLY | constants.O_NONBLOCK;
        return one(openSync(spec.path, flags));
      }
      case 'pipe-read':
      case 'pipe-write': {
        const fds = [0, 0];
        ok('pipe2', pipe2Fn(fds, constants.O_CLOEXEC ?? 0o2000000));
        return spec.kind === 'pipe-read' ? one(fds[0], [fds[1]]) : one(fds[1], [fds[0]]);
      }
      case 'socket-stream':
      case 'socket-dgram':
      case 'socket-seqpacket': return one(ok('socket', socketFn(AF_UNIX, SOCK[spec.kind.slice(7)], 0)));
      case 'socketpair-stream':
      case 'socketpair-dgram':
      case 'socketpair-seqpacket': {
        const sv = [0, 0];
        ok('socketpair', socketpairFn(AF_UNIX, SOCK[spec.kind.slice(11)], 0, sv));
        return one(sv[0], [sv[1]]);
      }
      case 'socket-listening': {
        const fd = ok('socket', socketFn(AF_UNIX, SOCK.stream, 0));
        // Autobind to an abstract address (only the family is given), then listen.
        ok('bind', bindFn(fd, Buffer.from([AF_UNIX, 0]), 2));
        ok('listen', listenFn(fd, 4));
        return one(fd);
      }
      case 'memfd': return memfd(spec.data, { size: spec.size, seals: 0 });
      case 'memfd-sealed': return memfd(spec.data, { size: spec.size });
      case 'memfd-write-sealed-only': return memfd(spec.data, { size: spec.size, seals: SEAL.WRITE });
      case 'kept': {
        // An fd kept from an earlier op (e.g. a mount fd the broker returned).
        const fd = ctx.kept?.[spec.index ?? 0];
        if (fd === undefined) throw new Error('no kept fd');
        return { fd, keep: [], close: () => undefined };
      }
      default: throw new Error(`unknown fd kind ${JSON.stringify(spec)}`);
    }
  }
  return { make, memfd };
}
