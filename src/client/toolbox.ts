// Toolbox containers: a named, persistent development container per user,
// made of one of their images and a writable layer of its own, entered as
// themselves. What persists lives in a directory the user owns,
// ~/.local/share/mountgate/toolbox/NAME (config.json, the overlay's
// layer/upper and layer/work, the session lock); what lives only while the
// container runs lives in $XDG_RUNTIME_DIR/mountgate/toolbox/NAME (the
// holder's pid file, the mount points the holder assembles the root on).
//
// A running container is one holder process (toolbox-holder.ts): PID 1 of a
// PID namespace, in a user namespace with the keep-id layout (the user's own
// id is itself inside, root and every other id are subordinate ids), and its
// own mount and UTS namespaces. `enter` starts it when none runs and joins it
// with nsenter, as the user (their uid, gid and groups, no capabilities) or,
// with --root, as the namespace's root (for package installs: no sudo, no
// setuid program, reachable only from the host by the namespace's owner).
//
// Sessions are counted by the kernel, not by us: every `enter` holds the
// session lock shared while its shell runs, and the holder waits for it
// exclusively, so the container stops when the last session ends however it
// ended (exit, Ctrl-C, kill -9 of mountgate). Starting and removing take an
// exclusive lock on the container's directory, so two `enter`s never start
// two holders on one layer.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, constants as fsConstants, mkdirSync, openSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { constants, tmpdir, userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import type { Duplex, Readable } from 'node:stream';
import { parseGroup } from '../accounts/parse.js';
import { MountgateError, NotFoundError } from '../errors.js';
import type { IdRange } from '../schema/types.generated.js';
import { clearNonblock, flock, LOCK_EX, LOCK_SH } from '../sys/syscalls.js';
import { attachHelperArgv, type AttachStep } from './attach-helper.js';
import { holderArgv } from './toolbox-holder.js';

const osSignals = constants.signals as Record<string, number>;

export interface ToolboxConfig {
  name: string;
  /** The image id, resolved when the container was made. */
  image: string;
  /** The image as the user named it. */
  imageRef: string;
  created: string;
}

export interface ToolboxPaths {
  data: string;
  config: string;
  lock: string;
  upper: string;
  work: string;
  run: string;
  pidFile: string;
  mnt: string;
}

/** A name is a hostname label: it becomes the container's hostname. */
export function checkToolboxName(name: string): void {
  if (!/^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(name)) {
    throw new MountgateError('InvalidRequest', `"${name}" is not a toolbox name: use letters, digits and inner hyphens, at most 63 (it becomes the hostname)`);
  }
}

function dataBase(): string {
  const data = process.env.XDG_DATA_HOME || join(userInfo().homedir, '.local', 'share');
  return join(data, 'mountgate', 'toolbox');
}

/** $XDG_RUNTIME_DIR, or a 0700 directory of the caller's under the temp dir. */
function runtimeBase(): string {
  const runtime = process.env.XDG_RUNTIME_DIR;
  if (runtime) return join(runtime, 'mountgate', 'toolbox');
  const dir = join(tmpdir(), `mountgate-${process.getuid!()}`);
  mkdirSync(dir, { mode: 0o700, recursive: true });
  const st = statSync(dir);
  if (st.uid !== process.getuid!() || (st.mode & 0o077) !== 0) throw new MountgateError('NotOwner', `${dir} is not a private directory of yours; set XDG_RUNTIME_DIR`);
  return join(dir, 'toolbox');
}

export function toolboxPaths(name: string): ToolboxPaths {
  checkToolboxName(name);
  const data = join(dataBase(), name);
  const run = join(runtimeBase(), name);
  return {
    data,
    config: join(data, 'config.json'),
    lock: join(data, 'lock'),
    upper: join(data, 'layer', 'upper'),
    work: join(data, 'layer', 'work'),
    run,
    pidFile: join(run, 'holder.pid'),
    mnt: join(run, 'mnt'),
  };
}

export function readToolbox(name: string): ToolboxConfig {
  const p = toolboxPaths(name);
  let text: string;
  try {
    text = readFileSync(p.config, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`there is no toolbox ${name} (mountgate toolbox list shows yours)`);
    throw err;
  }
  return JSON.parse(text) as ToolboxConfig;
}

export function createToolbox(name: string, image: { id: string; ref: string }): ToolboxConfig {
  const p = toolboxPaths(name);
  mkdirSync(dirname(p.data), { recursive: true, mode: 0o700 });
  try {
    mkdirSync(p.data, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new MountgateError('InvalidRequest', `a toolbox ${name} exists already (mountgate toolbox rm ${name} removes it)`);
    throw err;
  }
  // upper and work are made by the container's root on first start, so its / is root's.
  mkdirSync(dirname(p.upper), { mode: 0o700 });
  writeFileSync(p.lock, '', { mode: 0o600 });
  const config: ToolboxConfig = { name, image: image.id, imageRef: image.ref, created: new Date().toISOString() };
  writeFileSync(p.config, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  return config;
}

/** Field 22 of /proc/PID/stat: with the pid, it names one process for good. */
function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** The running holder's host pid, or undefined. */
export function runningHolder(p: ToolboxPaths): number | undefined {
  let text: string;
  try {
    text = readFileSync(p.pidFile, 'utf8');
  } catch {
    return undefined;
  }
  const [pid, start] = text.trim().split(' ');
  const n = Number(pid);
  return Number.isInteger(n) && n > 0 && start !== undefined && startTime(n) === start ? n : undefined;
}

export interface ToolboxListing extends ToolboxConfig {
  /** The holder's pid when running. */
  holder?: number;
}

export function listToolboxes(): ToolboxListing[] {
  let names: string[];
  try {
    names = readdirSync(dataBase()).sort();
  } catch {
    return [];
  }
  return names.flatMap((name) => {
    try {
      const config = readToolbox(name);
      const holder = runningHolder(toolboxPaths(name));
      return [{ ...config, ...(holder ? { holder } : {}) }];
    } catch {
      return [];
    }
  });
}

/** What the broker gives a starting container; ownership of the fds passes on. */
export interface HolderMounts {
  imageFd: number;
  /** An idmapped bind of the user's home, or undefined to go without. */
  homeFd?: number;
}

export interface Me {
  uid: number;
  gid: number;
  name: string;
  group: string;
  home: string;
  shell: string;
  uidMap: IdRange[];
  gidMap: IdRange[];
}

/** The caller as the container shows them: passwd and group entries from the host. */
export function groupName(gid: number): string {
  let text = '';
  try {
    text = readFileSync('/etc/group', 'utf8');
  } catch {
    // no group file: the name below
  }
  return parseGroup(text).find((g) => g.gid === gid)?.name ?? `g${gid}`;
}

function waitExit(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve(code ?? 128 + (signal ? (osSignals[signal] ?? 0) : 0)));
  });
}

/** The first line `stream` writes, or undefined at its end. */
function firstLine(stream: Readable): Promise<string | undefined> {
  return new Promise((resolve) => {
    let text = '';
    const onData = (d: Buffer) => {
      text += d.toString();
      const nl = text.indexOf('\n');
      if (nl >= 0) {
        stream.off('data', onData);
        resolve(text.slice(0, nl));
      }
    };
    stream.on('data', onData).once('end', () => resolve(undefined)).once('error', () => resolve(undefined));
  });
}

/** The holder's mount steps: the root assembled under mnt/root, then the holder itself. */
function holderSteps(p: ToolboxPaths, me: Me, hasHome: boolean): AttachStep[] {
  const lower = join(p.mnt, 'lower');
  const root = join(p.mnt, 'root');
  const at = (target: string, what: string, missing: 'make' | 'file' = 'make') => ({ base: root, target, what, missing });
  const steps: AttachStep[] = [
    // The mount points live in a tmpfs of the namespace's own: nothing on the host but mnt.
    { op: 'new', fsType: 'tmpfs', options: { mode: '0700' }, base: '/', target: p.mnt, what: 'a tmpfs', missing: 'have' },
    { op: 'attach', fd: 3, base: '/', target: lower, what: 'the image', missing: 'make' },
    { op: 'dir', path: p.upper, mode: 0o755 },
    { op: 'dir', path: p.work, mode: 0o700 },
    { op: 'new', fsType: 'overlay', options: { lowerdir: lower, upperdir: p.upper, workdir: p.work, userxattr: undefined }, base: '/', target: root, what: "the container's layer", missing: 'make' },
    { op: 'new', fsType: 'proc', options: {}, ...at('/proc', 'the proc filesystem') },
    { op: 'new', fsType: 'tmpfs', options: { mode: '0755', size: '1m' }, ...at('/dev', 'a tmpfs') },
  ];
  for (const dev of ['null', 'zero', 'full', 'random', 'urandom', 'tty']) {
    steps.push({ op: 'host', dir: `/dev/${dev}`, ...at(`/dev/${dev}`, `/dev/${dev}`, 'file') });
  }
  steps.push(
    { op: 'new', fsType: 'devpts', options: { newinstance: undefined, ptmxmode: '0666', mode: '0620' }, ...at('/dev/pts', 'a devpts') },
    { op: 'symlink', to: 'pts/ptmx', base: root, target: '/dev/ptmx' },
    { op: 'symlink', to: '/proc/self/fd', base: root, target: '/dev/fd' },
    ...['stdin', 'stdout', 'stderr'].map((name, k): AttachStep => ({ op: 'symlink', to: `/proc/self/fd/${k}`, base: root, target: `/dev/${name}` })),
    { op: 'new', fsType: 'tmpfs', options: { mode: '1777' }, ...at('/dev/shm', 'a tmpfs') },
    { op: 'host', dir: '/sys', ...at('/sys', "the host's /sys") },
    { op: 'readonly', base: root, target: '/sys' },
    { op: 'new', fsType: 'tmpfs', options: { mode: '1777' }, ...at('/tmp', 'a tmpfs') },
    { op: 'new', fsType: 'tmpfs', options: { mode: '0755' }, ...at('/run', 'a tmpfs') },
  );
  if (hasHome) steps.push({ op: 'attach', fd: 4, ...at(me.home, 'your home') });
  return steps;
}

/** Starts the container's holder; resolves with its host pid once the container is ready. */
async function startHolder(box: ToolboxConfig, p: ToolboxPaths, me: Me, mounts: HolderMounts, writeMaps: (pid: number, u: IdRange[], g: IdRange[]) => Promise<void>): Promise<number> {
  const fds = [mounts.imageFd, ...(mounts.homeFd === undefined ? [] : [mounts.homeFd])];
  let owner: ChildProcess | undefined;
  let holder: ChildProcess | undefined;
  try {
    mkdirSync(p.mnt, { recursive: true, mode: 0o700 });
    // The user namespace comes first, with its maps: a process of the user's
    // own id has no capabilities in a keep-id namespace, so the holder enters
    // it as its root with nsenter (setns grants them) and makes the other
    // namespaces from there. This process only holds the namespace until then.
    owner = spawn('unshare', ['--user', '--', 'sh', '-c', 'echo ready >&3 && read go <&3'], { stdio: ['ignore', 'ignore', 'inherit', 'pipe'] });
    const ownerExit = waitExit(owner);
    const sync = owner.stdio[3] as Duplex;
    const ready = await Promise.race([firstLine(sync), ownerExit.then(() => undefined)]);
    if (ready !== 'ready') throw new MountgateError('Internal', 'unshare could not make a user namespace');
    await writeMaps(owner.pid!, me.uidMap, me.gidMap);
    const argv = ['nsenter', '--user', `--target=${owner.pid}`, '--', 'unshare', '--mount', '--pid', '--uts', '--fork', '--propagation', 'private', '--',
      ...attachHelperArgv(holderSteps(p, me, mounts.homeFd !== undefined), holderArgv({
        root: join(p.mnt, 'root'), lock: p.lock, runDir: p.run, hostname: box.name, user: me.name, uid: me.uid, gid: me.gid, group: me.group, home: me.home, shell: me.shell,
      }))];
    // Its own session: the terminal's signals are not its business.
    holder = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe', ...fds], detached: true, cwd: '/' });
    for (const fd of fds.splice(0)) closeSync(fd);
    let stderr = '';
    holder.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const holderExit = waitExit(holder);
    const line = await Promise.race([firstLine(holder.stdout!), holderExit.then(() => undefined)]);
    const pid = Number(line);
    if (!line || !Number.isInteger(pid) || pid <= 0) {
      await holderExit.catch(() => undefined);
      throw new MountgateError('Internal', `the toolbox ${box.name} did not start: ${stderr.trim() || 'its holder exited'}`);
    }
    writeFileSync(p.pidFile, `${pid} ${startTime(pid)}\n`, { mode: 0o600 });
    sync.end('go\n');
    await ownerExit;
    holder.stdout!.destroy();
    holder.stderr!.destroy();
    holder.unref();
    return pid;
  } catch (err) {
    holder?.kill('SIGKILL');
    owner?.kill('SIGKILL');
    throw err;
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

export interface EnterSpec {
  name: string;
  me: Me;
  /** Run as the namespace's root instead of as the user. */
  asRoot: boolean;
  /** The command; empty: the user's shell. */
  command: string[];
  /** A terminal (when standard input is one). */
  tty: boolean;
  /** Asked only when the container must be started. */
  mounts: (box: ToolboxConfig) => Promise<HolderMounts>;
  writeMaps: (pid: number, u: IdRange[], g: IdRange[]) => Promise<void>;
}

/** A directory of the caller's, opened for flock. */
function openForLock(path: string, directory = false): number {
  return openSync(path, fsConstants.O_RDONLY | (directory ? fsConstants.O_DIRECTORY : 0));
}

/** Enters the container, starting it if it is not running; resolves with the command's status. */
export async function enterToolbox(spec: EnterSpec): Promise<number> {
  const box = readToolbox(spec.name);
  const p = toolboxPaths(spec.name);
  const session = openForLock(p.lock);
  try {
    const dir = openForLock(p.data, true);
    let holder: number;
    try {
      flock(dir, LOCK_EX);
      // Waits while a container that is stopping still holds the lock.
      flock(session, LOCK_SH);
      holder = runningHolder(p) ?? (await startHolder(box, p, spec.me, await spec.mounts(box), spec.writeMaps));
    } finally {
      closeSync(dir);
    }
    return await joinHolder(holder, spec);
  } finally {
    closeSync(session);
  }
}

async function joinHolder(holder: number, spec: EnterSpec): Promise<number> {
  const { me } = spec;
  const inside = (path: string) => statSync(`/proc/${holder}/root${path}`, { throwIfNoEntry: false });
  const shell = inside(me.shell)?.isFile() ? me.shell : '/bin/sh';
  const here = process.cwd();
  const cwd = (here === me.home || here.startsWith(`${me.home}/`)) && inside(here)?.isDirectory() ? here : inside(me.home)?.isDirectory() ? me.home : '/';
  const args = ['--user', '--mount', '--pid', '--uts', `--target=${holder}`, ...(spec.asRoot ? ['--setuid=0', '--setgid=0'] : ['--preserve-credentials']), `--wdns=${cwd}`, '--',
    ...(spec.command.length > 0 ? spec.command : [shell])];
  const env: Record<string, string> = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    TERM: process.env.TERM ?? 'xterm',
    HOME: spec.asRoot ? '/root' : me.home,
    USER: spec.asRoot ? 'root' : me.name,
    LOGNAME: spec.asRoot ? 'root' : me.name,
    SHELL: shell,
    container: 'mountgate',
    ...(process.env.LANG ? { LANG: process.env.LANG } : {}),
  };
  // The container's own devpts: inside, the terminal is /dev/pts/N.
  const terminal = spec.tty ? (await import('./terminal.js')).openTerminal(`/proc/${holder}/root/dev/pts/ptmx`) : undefined;
  let child: ChildProcess;
  try {
    if (terminal) clearNonblock(terminal.slave);
    // With a terminal, setsid makes it the controlling one, so the shell has job control.
    child = terminal
      ? spawn('setsid', ['--ctty', 'nsenter', ...args], { stdio: [terminal.slave, terminal.slave, terminal.slave], env })
      : spawn('nsenter', args, { stdio: 'inherit', env });
  } finally {
    terminal?.closeSlave();
  }
  const exited = waitExit(child);
  const ignore = () => undefined;
  const forward = (signal: NodeJS.Signals) => child.kill(signal);
  process.on('SIGINT', ignore).on('SIGQUIT', ignore).on('SIGTERM', forward).on('SIGHUP', forward);
  try {
    return await (terminal ? terminal.relay(exited) : exited);
  } finally {
    process.off('SIGINT', ignore).off('SIGQUIT', ignore).off('SIGTERM', forward).off('SIGHUP', forward);
    terminal?.close();
  }
}

async function holderGone(pid: number, start: string | undefined): Promise<void> {
  for (let k = 0; k < 250 && start !== undefined && startTime(pid) === start; k++) await new Promise((r) => setTimeout(r, 20));
}

/**
 * Removes the container: its layer and its state. A running one is refused
 * unless `force`, which stops it first (every shell in it is killed).
 * `removeAsOwner` removes a tree whose entries belong to the user's subordinate ids.
 */
export async function removeToolbox(name: string, force: boolean, removeAsOwner: (dir: string) => Promise<void>): Promise<void> {
  readToolbox(name);
  const p = toolboxPaths(name);
  const dir = openForLock(p.data, true);
  try {
    flock(dir, LOCK_EX);
    const session = openForLock(p.lock);
    try {
      if (!flock(session, LOCK_EX, true)) {
        const holder = runningHolder(p);
        if (!force) throw new MountgateError('InvalidRequest', `the toolbox ${name} is running${holder ? ` (holder ${holder})` : ''}: leave its shells, or add --force to stop it`);
        if (holder) {
          const start = startTime(holder);
          process.kill(holder, 'SIGKILL');
          await holderGone(holder, start);
        }
        // The sessions end with their container.
        flock(session, LOCK_EX);
      }
    } finally {
      closeSync(session);
    }
    rmSync(p.run, { recursive: true, force: true });
    for (let d = dirname(p.run), k = 0; k < 2; d = dirname(d), k++) {
      try {
        rmdirSync(d);
      } catch {
        break; // not empty: another container's, or the user's
      }
    }
    try {
      rmSync(p.data, { recursive: true, force: true });
    } catch {
      // Entries of the container's root and other ids: removed from inside a namespace where they are the user's.
      await removeAsOwner(p.data);
    }
  } finally {
    closeSync(dir);
  }
}
