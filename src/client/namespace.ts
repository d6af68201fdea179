// Runs a command in a new user+mount namespace of the caller, with the full
// rootless mapping (its own id as 0, its subordinate ranges after it, written
// by newuidmap/newgidmap from Debian's uidmap package), after attaching the
// mounts the broker returned. Node cannot unshare or setns itself (it has
// threads), so `unshare` creates the namespaces, waits until the maps are
// written, and only then starts the attach helper (attach-helper.ts), which
// does the steps planned here and becomes the command: a program started
// before the maps exist would have no capabilities in the namespace. The
// command is this process's only child; with a terminal requested, it runs
// on a pseudo-terminal that this process relays (terminal.ts).
// An image mounted at "/" becomes the command's root, with the host's /dev,
// /proc and /sys and a fresh /tmp; a writable image gets an overlay whose
// upper and work directories live in a scratch directory of the caller's,
// created here and removed when the command has exited.
import { spawn, execFile } from 'node:child_process';
import { accessSync, closeSync, constants as fsConstants, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Duplex } from 'node:stream';
import type { IdRange } from '../schema/types.generated.js';
import { trace } from '../trace.js';
import { attachHelperArgv, type AttachStep } from './attach-helper.js';

const execFileAsync = promisify(execFile);
const osSignals = constants.signals as Record<string, number>;

export interface NamespaceMounts {
  /** A detached mount fd; ownership passes to runInNamespace. */
  fd: number;
  /** Where to attach it inside the namespace (an existing directory, or one the helper may create). */
  target: string;
}

export interface ImageMounts {
  /** A detached composefs mount from MountImage; ownership passes to runInNamespace. */
  fd: number;
  /** Where inside: "/" makes the image the command's root. */
  target: string;
  /** Put a writable overlay over it (writes land in a scratch directory, removed afterwards). */
  writable: boolean;
}

export interface RunSpec {
  uidMap: IdRange[];
  gidMap: IdRange[];
  mounts: NamespaceMounts[];
  images?: ImageMounts[];
  command: string[];
  interactive: boolean;
  cwd?: string;
  /** The command's whole environment (an image's Env); default: this process's. */
  env?: Record<string, string>;
  /** The user to become inside before the command (an image's User: NAME or UID, with :GROUP or :GID). */
  user?: string;
}

function mapArgs(map: IdRange[]): string[] {
  return map.flatMap((r) => [String(r.from), String(r.to), String(r.count)]);
}

export async function writeMaps(pid: number, uidMap: IdRange[], gidMap: IdRange[]): Promise<void> {
  try {
    // Both at once: they write different files of the same process.
    await Promise.all([execFileAsync('newuidmap', [String(pid), ...mapArgs(uidMap)]), execFileAsync('newgidmap', [String(pid), ...mapArgs(gidMap)])]);
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`cannot map ids into the new namespace: ${(e.stderr ?? e.message).trim()} (${mapFailureHint()})`);
  }
}

/** Why newuidmap may have failed, as far as this process can tell. */
function mapFailureHint(): string {
  if (/^NoNewPrivs:\s*1$/m.test(readFileSync('/proc/self/status', 'utf8'))) {
    // bubblewrap, systemd's NoNewPrivileges= and `setpriv --no-new-privs` set it; it is inherited and never cleared.
    return 'this process runs with no_new_privs (NoNewPrivs: 1 in /proc/self/status: bubblewrap and other sandboxes set it), so the setuid newuidmap and newgidmap cannot write the maps; run mountgate outside the sandbox and hand the mount in, e.g. `mountgate run --image NAME:DIR -- bwrap --ro-bind DIR / ...`';
  }
  return 'is the uidmap package installed, and do you have ranges in /etc/subuid and /etc/subgid?';
}

/** A fresh 0700 directory of the caller's: under $XDG_RUNTIME_DIR when usable, else the temp dir. */
function makeScratch(): string {
  let base = tmpdir();
  const runtime = process.env.XDG_RUNTIME_DIR;
  try {
    if (runtime && statSync(runtime).isDirectory()) {
      accessSync(runtime, fsConstants.W_OK);
      base = runtime;
    }
  } catch {
    // not usable: the temp dir
  }
  return mkdtempSync(join(base, 'mountgate-run-'));
}

/**
 * Removes the scratch directory. Copied-up files may belong to subordinate
 * ids the caller cannot remove as itself, so fall back to `rm -rf` inside a
 * namespace with the same maps, where they are ids the caller controls.
 */
async function removeScratch(dir: string, spec: RunSpec): Promise<void> {
  try {
    rmSync(dir, { recursive: true, force: true });
    return;
  } catch {
    // some entries are not the caller's on the host
  }
  const code = await runInNamespace({ uidMap: spec.uidMap, gidMap: spec.gidMap, mounts: [], command: ['rm', '-rf', '--', dir], interactive: false });
  if (code !== 0) process.stderr.write(`mountgate: could not remove the scratch directory ${dir}\n`);
}

/** Runs the command; resolves with its exit status (128+signal when killed). */
export async function runInNamespace(spec: RunSpec): Promise<number> {
  const images = spec.images ?? [];
  const fds = [...spec.mounts.map((m) => m.fd), ...images.map((i) => i.fd)];
  let scratch: string | undefined;
  let steps: AttachStep[];
  // Ctrl-C goes to the whole foreground process group: from the moment the
  // scratch directory exists until it is removed (before the command starts,
  // and while the cleanup runs), it must not end this process.
  const ignore = () => undefined;
  process.on('SIGINT', ignore).on('SIGQUIT', ignore);
  try {
    try {
      if (images.some((i) => i.writable || i.target === '/')) scratch = makeScratch();
      steps = attachSteps(spec, images, scratch);
    } catch (err) {
      for (const fd of fds) closeSync(fd);
      if (scratch) rmSync(scratch, { recursive: true, force: true });
      throw err;
    }
    try {
      return await spawnHelper(spec, steps, fds);
    } finally {
      if (scratch) await removeScratch(scratch, spec);
    }
  } finally {
    process.off('SIGINT', ignore).off('SIGQUIT', ignore);
  }
}

/** The helper's steps, in order, with the scratch directories they need made. */
function attachSteps(spec: RunSpec, images: ImageMounts[], scratch: string | undefined): AttachStep[] {
  const firstMountFd = 4; // 0-2 stdio, 3 the sync socket; then the binds, then the images
  const rootIndex = images.findIndex((i) => i.target === '/');
  const root = rootIndex >= 0 ? join(scratch!, 'root') : undefined;
  if (root) mkdirSync(root);
  const base = root ?? '/';
  const imageSteps = (img: ImageMounts, k: number): AttachStep[] => {
    const fd = firstMountFd + spec.mounts.length + k;
    const at = { base, target: img.target, what: 'the image', missing: 'make' } as const;
    if (!img.writable) return [{ op: 'attach', fd, ...at }];
    // The image is the overlay's lower layer; writes go to upper.
    const [lower, upper, work] = ['lower', 'upper', 'work'].map((d) => join(scratch!, `image${k}`, d)) as [string, string, string];
    for (const d of [lower, upper, work]) mkdirSync(d, { recursive: true });
    return [
      { op: 'attach', fd, base: '/', target: lower, what: 'the image', missing: 'make' },
      { op: 'new', fsType: 'overlay', options: { lowerdir: lower, upperdir: upper, workdir: work, userxattr: undefined }, ...at },
    ];
  };
  const steps: AttachStep[] = spec.interactive ? [{ op: 'tty' }] : [];
  if (root) {
    steps.push(...imageSteps(images[rootIndex]!, rootIndex));
    // A read-only image gets only the system mounts it has directories for.
    const missing = images[rootIndex]!.writable ? 'make' : 'have';
    for (const dir of ['/dev', '/proc', '/sys']) steps.push({ op: 'host', dir, base: root, target: dir, what: `the host's ${dir}`, missing });
    steps.push({ op: 'new', fsType: 'tmpfs', options: { mode: '1777' }, base: root, target: '/tmp', what: 'a tmpfs', missing });
  }
  images.forEach((img, k) => {
    if (k !== rootIndex) steps.push(...imageSteps(img, k));
  });
  spec.mounts.forEach((m, k) => steps.push({ op: 'attach', fd: firstMountFd + k, base, target: m.target, what: 'the bind', missing: 'make' }));
  if (root) steps.push({ op: 'root', dir: root });
  if (spec.cwd) steps.push({ op: 'cwd', dir: spec.cwd });
  if (spec.user) steps.push({ op: 'user', spec: spec.user });
  return steps;
}

async function spawnHelper(spec: RunSpec, steps: AttachStep[], fds: number[]): Promise<number> {
  // sh signals readiness on fd 3 from inside the new namespaces, waits for the
  // go, then execs the helper, which starts with full capabilities there.
  const script = 'echo ready >&3 && read go <&3 && exec 3>&- && exec "$0" "$@"';
  const terminal = spec.interactive ? (await import('./terminal.js')).openTerminal() : undefined;
  const stdio = terminal ? [terminal.slave, terminal.slave, terminal.slave] : (['inherit', 'inherit', 'inherit'] as const);
  let child;
  try {
    child = spawn('unshare', ['--user', '--mount', '--propagation', 'private', '--', 'sh', '-c', script, ...attachHelperArgv(steps, spec.command)], {
      stdio: [...stdio, 'pipe', ...fds],
      ...(spec.env ? { env: spec.env } : {}),
    });
  } finally {
    for (const fd of fds) closeSync(fd);
    terminal?.closeSlave();
  }
  const sync = child.stdio[3] as Duplex;
  trace('unshare started');

  const exited = new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve(code ?? 128 + (signal ? (osSignals[signal] ?? 0) : 0)));
  });
  // The command gets the terminal's signals itself; a signal sent to this
  // process is passed on, and this process stays to report the status.
  const ignore = () => undefined;
  const forward = (signal: NodeJS.Signals) => child.kill(signal);
  process.on('SIGINT', ignore).on('SIGQUIT', ignore).on('SIGTERM', forward).on('SIGHUP', forward);
  try {
    await Promise.race([
      new Promise<void>((resolve) => sync.once('data', () => resolve())),
      exited.then((code) => Promise.reject(new Error(`unshare exited (${code}) before the namespace was ready`))),
    ]);
    trace('namespace made');
    try {
      await writeMaps(child.pid!, spec.uidMap, spec.gidMap);
    } catch (err) {
      child.kill('SIGKILL');
      await exited.catch(() => undefined);
      throw err;
    }
    trace('ids mapped');
    sync.end('go\n');
    const status = await (terminal ? terminal.relay(exited) : exited);
    trace('command exited');
    return status;
  } finally {
    process.off('SIGINT', ignore).off('SIGQUIT', ignore).off('SIGTERM', forward).off('SIGHUP', forward);
    terminal?.close();
  }
}
