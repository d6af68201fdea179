// Runs a command in a new user+mount namespace of the caller, with the full
// rootless mapping (its own id as 0, its subordinate ranges after it, written
// by newuidmap/newgidmap from Debian's uidmap package), after attaching the
// mounts the broker returned. Node cannot unshare or setns itself (it has
// threads), so `unshare` creates the namespaces, waits until the maps are
// written, and only then starts the in-namespace helper (inner.ts): a program
// started before the maps exist would have no capabilities in the namespace.
// An image mounted at "/" becomes the command's root; a writable image gets
// an overlay whose upper and work directories live in a scratch directory of
// the caller's, created here and removed when the command has exited.
import { spawn, execFile } from 'node:child_process';
import { accessSync, closeSync, constants as fsConstants, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Duplex } from 'node:stream';
import type { IdRange } from '../schema/types.generated.js';

const execFileAsync = promisify(execFile);
const osSignals = constants.signals as Record<string, number>;
const innerScript = fileURLToPath(new URL('./inner.js', import.meta.url));

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
}

/** What inner.ts receives as its one argument. */
export interface InnerSpec {
  mounts: { fd: number; target: string }[];
  /** Images; with `upper`, the image is attached at `lower` and an overlay goes at the target. */
  images: { fd: number; target: string; lower?: string; upper?: string; work?: string }[];
  /** Set when an image is the root: the directory the new root is assembled at, then chrooted into. */
  root?: string;
  command: string[];
  interactive: boolean;
  cwd?: string;
}

function mapArgs(map: IdRange[]): string[] {
  return map.flatMap((r) => [String(r.from), String(r.to), String(r.count)]);
}

async function writeMaps(pid: number, uidMap: IdRange[], gidMap: IdRange[]): Promise<void> {
  try {
    await execFileAsync('newuidmap', [String(pid), ...mapArgs(uidMap)]);
    await execFileAsync('newgidmap', [String(pid), ...mapArgs(gidMap)]);
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`cannot map ids into the new namespace: ${(e.stderr ?? e.message).trim()} (is the uidmap package installed, and do you have ranges in /etc/subuid and /etc/subgid?)`);
  }
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
  let inner: InnerSpec;
  try {
    if (images.some((i) => i.writable || i.target === '/')) scratch = makeScratch();
    inner = innerSpec(spec, images, scratch);
  } catch (err) {
    for (const fd of fds) closeSync(fd);
    if (scratch) rmSync(scratch, { recursive: true, force: true });
    throw err;
  }
  try {
    return await spawnInner(spec, inner, fds);
  } finally {
    if (scratch) await removeScratch(scratch, spec);
  }
}

/** What the helper does, with the scratch directories it needs made. */
function innerSpec(spec: RunSpec, images: ImageMounts[], scratch: string | undefined): InnerSpec {
  const firstMountFd = 4; // 0-2 stdio, 3 the sync socket
  const root = images.some((i) => i.target === '/') ? join(scratch!, 'root') : undefined;
  if (root) mkdirSync(root);
  return {
    mounts: spec.mounts.map((m, k) => ({ fd: firstMountFd + k, target: m.target })),
    images: images.map((img, k) => {
      const fd = firstMountFd + spec.mounts.length + k;
      if (!img.writable) return { fd, target: img.target };
      const dirs = { lower: join(scratch!, `image${k}`, 'lower'), upper: join(scratch!, `image${k}`, 'upper'), work: join(scratch!, `image${k}`, 'work') };
      for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });
      return { fd, target: img.target, ...dirs };
    }),
    ...(root ? { root } : {}),
    command: spec.command,
    interactive: spec.interactive,
    ...(spec.cwd ? { cwd: spec.cwd } : {}),
  };
}

async function spawnInner(spec: RunSpec, inner: InnerSpec, fds: number[]): Promise<number> {
  // sh signals readiness on fd 3 from inside the new namespaces, waits for the
  // go, then execs the helper, which starts with full capabilities there.
  const script = 'echo ready >&3 && read go <&3 && exec 3>&- && exec "$0" "$@"';
  const child = spawn(
    'unshare',
    ['--user', '--mount', '--propagation', 'private', '--', 'sh', '-c', script, process.execPath, innerScript, JSON.stringify(inner)],
    { stdio: ['inherit', 'inherit', 'inherit', 'pipe', ...fds] },
  );
  for (const fd of fds) closeSync(fd);
  const sync = child.stdio[3] as Duplex;

  const exited = new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve(code ?? 128 + (signal ? (osSignals[signal] ?? 0) : 0)));
  });
  await Promise.race([
    new Promise<void>((resolve) => sync.once('data', () => resolve())),
    exited.then((code) => Promise.reject(new Error(`unshare exited (${code}) before the namespace was ready`))),
  ]);
  try {
    await writeMaps(child.pid!, spec.uidMap, spec.gidMap);
  } catch (err) {
    child.kill('SIGKILL');
    await exited.catch(() => undefined);
    throw err;
  }
  sync.end('go\n');
  return exited;
}
