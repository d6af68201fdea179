// The helper that runs inside the caller's new user+mount namespace, with
// full capabilities there: attaches each image and mount fd at its target,
// then becomes the command (execvp), or, with a terminal requested, runs it
// on a pseudo-terminal (node-pty) and relays the user's terminal to it.
// With an image at "/", it assembles the new root in a scratch directory (the
// image, the host's /dev, /proc and /sys, a fresh /tmp, then the binds at
// their paths inside the image) and chroots into it before the command.
import { closeSync, constants as fsConstants, existsSync, mkdirSync, openSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { chroot, close, execvp, fsconfigCreate, fsconfigString, fsmount, fsopen, moveMount, openTreeClone } from '../sys/syscalls.js';
import type { InnerSpec } from './namespace.js';

const require = createRequire(import.meta.url);

function die(message: string, code = 1): never {
  process.stderr.write(`mountgate: ${message}\n`);
  process.exit(code);
}


/** The host path of `target` (a path as the command will see it). */
function hostPath(spec: InnerSpec, target: string): string {
  return spec.root ? join(spec.root, target) : target;
}

/** Makes sure a directory exists at `target` to mount `what` on; dies with the reason otherwise. */
function mountPoint(spec: InnerSpec, target: string, what: string): string {
  const path = hostPath(spec, target);
  try {
    if (statSync(path).isDirectory()) return path;
    die(`cannot mount ${what} at ${target}: it is not a directory`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') die(`cannot mount ${what} at ${target}: ${(err as Error).message}`);
  }
  try {
    // One level at a time: a recursive mkdir reports EROFS as ENOENT.
    let at = spec.root ?? '/';
    for (const name of target.split('/').filter((n) => n !== '')) {
      at = join(at, name);
      if (!existsSync(at)) mkdirSync(at);
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EROFS' && spec.root) {
      die(`cannot mount ${what} at ${target}: the image has no directory ${target} and is read-only; choose a directory that exists in it (or one under /tmp), or add --writable`);
    }
    die(`cannot create the mount point ${target} for ${what}: ${(err as Error).message}`);
  }
  return path;
}

function attach(fd: number, path: string, target: string, what: string): void {
  try {
    moveMount(fd, path);
  } catch (err) {
    die(`cannot attach ${what} at ${target}: ${(err as Error).message}`);
  }
  close(fd);
}

/** A new mount of `fsType` with string options, attached at `path`. */
function mountNew(fsType: string, options: Record<string, string | undefined>, path: string, target: string): void {
  let fsFd = -1;
  try {
    fsFd = fsopen(fsType);
    for (const [k, v] of Object.entries(options)) fsconfigString(fsFd, k, v);
    fsconfigCreate(fsFd);
    attach(fsmount(fsFd), path, target, fsType);
  } catch (err) {
    die(`cannot mount ${fsType} at ${target}: ${(err as Error).message}`);
  } finally {
    if (fsFd >= 0) close(fsFd);
  }
}

function attachImage(spec: InnerSpec, img: InnerSpec['images'][number]): void {
  const path = img.target === '/' ? spec.root! : mountPoint(spec, img.target, 'the image');
  if (!img.upper) return attach(img.fd, path, img.target, 'the image');
  // Writable: the image is the overlay's lower layer; writes go to upper.
  attach(img.fd, img.lower!, img.target, 'the image');
  mountNew('overlay', { lowerdir: img.lower, upperdir: img.upper, workdir: img.work, userxattr: undefined }, path, img.target);
}

/** What a command needs in a root of its own: the host's /dev, /proc and /sys, a fresh /tmp. */
function systemMounts(spec: InnerSpec): void {
  for (const dir of ['/dev', '/proc', '/sys']) {
    const path = join(spec.root!, dir);
    if (!existsSync(path) && !spec.images.some((i) => i.target === '/' && i.upper)) continue; // a read-only image without it
    mountPoint(spec, dir, `the host's ${dir}`);
    const src = openSync(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
    try {
      attach(openTreeClone(src, true), path, dir, `the host's ${dir}`);
    } catch (err) {
      die(`cannot bind the host's ${dir} at ${dir}: ${(err as Error).message}`);
    } finally {
      closeSync(src);
    }
  }
  const tmp = join(spec.root!, 'tmp');
  if (existsSync(tmp) || spec.images.some((i) => i.target === '/' && i.upper)) {
    mountNew('tmpfs', { mode: '1777' }, mountPoint(spec, '/tmp', 'a tmpfs'), '/tmp');
  }
}

function attachAll(spec: InnerSpec): void {
  const rootImage = spec.images.find((i) => i.target === '/');
  if (rootImage) {
    attachImage(spec, rootImage);
    systemMounts(spec);
  }
  for (const img of spec.images) if (img !== rootImage) attachImage(spec, img);
  for (const m of spec.mounts) attach(m.fd, mountPoint(spec, m.target, 'the bind'), m.target, 'the bind');
}

function runOnTerminal(spec: InnerSpec): void {
  const pty = require('node-pty') as typeof import('node-pty');
  const [file, ...args] = spec.command;
  const term = pty.spawn(file!, args, {
    name: process.env.TERM ?? 'xterm-256color',
    cols: process.stdout.columns || 80,
    rows: process.stdout.rows || 24,
    cwd: spec.cwd ?? process.cwd(),
    env: process.env as Record<string, string>,
  });
  if (process.stdin.isTTY) process.stdin.setRawMode(true);
  process.stdin.on('data', (d: Buffer) => term.write(d.toString('binary')));
  term.onData((d) => process.stdout.write(d));
  process.stdout.on('resize', () => term.resize(process.stdout.columns, process.stdout.rows));
  term.onExit(({ exitCode, signal }) => {
    if (process.stdin.isTTY) process.stdin.setRawMode(false);
    process.exit(signal ? 128 + signal : exitCode);
  });
}

const spec = JSON.parse(process.argv[2] ?? '{}') as InnerSpec;
spec.images ??= [];
attachAll(spec);
if (spec.command.length === 0) die('no command to run', 2);
if (spec.root) {
  if (spec.interactive) require('node-pty'); // loaded from the host, before the root changes
  try {
    chroot(spec.root);
  } catch (err) {
    die(`cannot enter the image's root: ${(err as Error).message}`);
  }
  process.chdir('/');
}
try {
  if (spec.cwd) process.chdir(spec.cwd);
} catch (err) {
  die(`cannot change to the directory ${spec.cwd}: ${(err as Error).message}`);
}
if (spec.interactive) runOnTerminal(spec);
else {
  try {
    execvp(spec.command[0]!, spec.command);
  } catch (err) {
    die(`cannot run ${spec.command[0]}: ${(err as Error).message}`, 127);
  }
}
