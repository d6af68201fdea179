// `mountgate mount`, `mountgate bind` and `mountgate umount`: a mount from the
// broker attached in a user+mount namespace of yours that already exists,
// rather than in one `run` makes for a single command. The namespace is the
// one this process runs in (under `podman unshare`, say), or another
// process's, named by --into PID or --into podman (podman's rootless pause
// process, whose namespace every rootless container of yours starts from).
// Node cannot enter a mount namespace itself (it has threads), so for --into
// a small helper started in the target namespace (nsenter, then the attach
// helper) attaches the fd.
import { closeSync, fstatSync, mkdirSync, openSync, readFileSync, readlinkSync, renameSync, statSync, writeFileSync, constants as fsConstants } from 'node:fs';
import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { lookupAccount } from '../accounts/load.js';
import { attachHelperArgv, type AttachStep, type Stub } from '../client/attach-helper.js';
import { isInitialIdMap, keepIdMap, namespaceMap, ownerMap, parseIdMapText, parseUsernsOption, showIdMap, type KeepIdOption } from '../client/idmaps.js';
import { resolveImageRef } from '../client/image-ref.js';
import { MountgateError } from '../errors.js';
import { controlledIds, identityMap } from '../policy/idmap.js';
import type { BindRequest, IdRange } from '../schema/types.generated.js';
import { flock, LOCK_EX, moveMount } from '../sys/syscalls.js';
import { parseBindSpec } from './bind-spec.js';
import { fdRange, runWithFd } from './fd-command.js';
import { UsageError } from './usage.js';
import { say, withBroker } from './session.js';

/** Where a mount goes: the namespace of this process, or of process `pid`. */
interface Target {
  pid?: number;
  /** "this process's namespace", "podman's namespace (pause process 1234)". */
  name: string;
  /** The mount namespace and the process holding it (holderKey): namespace numbers are reused once one ends. */
  ns: string;
  /** Is it podman's (its pause process's)? */
  podman: boolean;
  /** Ids as the namespace's processes see them (for --userns keep-id: as that container's do) → host ids. */
  uidMap: IdRange[];
  gidMap: IdRange[];
}

function usage(message: string): never {
  throw new UsageError(message);
}

/** podman's rootless pause process: it holds the user and mount namespace every rootless container of yours starts in. */
function podmanPausePid(): number {
  return findPausePid() ?? usage(`podman's pause process is not running (no live pid in ${pauseFiles().join(' or ')}); any rootless podman command starts it, e.g. \`podman unshare true\``);
}

function runtimeDirs(): string[] {
  return [...new Set([process.env.XDG_RUNTIME_DIR, `/run/user/${process.getuid!()}`].filter((d): d is string => Boolean(d)))];
}

function pauseFiles(): string[] {
  return runtimeDirs().map((d) => `${d}/libpod/tmp/pause.pid`);
}

function findPausePid(): number | undefined {
  for (const dir of runtimeDirs()) {
    let text: string;
    try {
      text = readFileSync(`${dir}/libpod/tmp/pause.pid`, 'utf8');
    } catch {
      continue;
    }
    const pid = Number(text.trim());
    if (Number.isInteger(pid) && pid > 0 && statSync(`/proc/${pid}`, { throwIfNoEntry: false })) return pid;
  }
  return undefined;
}

/** The mount namespace of process `pid` (or this one), "" when it cannot be read. */
function mountNamespaceOf(pid: number | 'self'): string {
  try {
    return readlinkSync(`/proc/${pid}/ns/mnt`);
  } catch {
    return '';
  }
}

/**
 * Process `pid`'s mount namespace, with the pid and start time of the
 * process ("mnt:[4026532301] 1234@567890"): the kernel hands a namespace's
 * number to a new one once it ends, so the number alone cannot tell podman's
 * new pause process's namespace from the one it replaced. "" when gone.
 */
function holderKey(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
    const ns = mountNamespaceOf(pid);
    return ns && start ? `${ns} ${pid}@${start}` : '';
  } catch {
    return '';
  }
}

/**
 * The namespace named by --into (a pid, or "podman"), or this process's own;
 * with `userns` ("keep-id", "keep-id:uid=N,gid=N"), ids as a container
 * podman starts there with that --userns sees them.
 */
function targetOf(into: string | undefined, userns?: string): Target {
  return withUserns(namespaceOf(into), userns);
}

function withUserns(target: Target, userns: string | undefined): Target {
  if (userns === undefined) return target;
  let keep: KeepIdOption;
  try {
    keep = parseUsernsOption(userns);
  } catch (err) {
    usage((err as Error).message);
  }
  const account = lookupAccount(process.getuid!());
  return {
    ...target,
    name: `${target.name}, as --userns ${userns} containers see it`,
    uidMap: keepIdMap(target.uidMap, keep.uid ?? process.getuid!()),
    gidMap: keepIdMap(target.gidMap, keep.gid ?? account?.gid ?? process.getgid!()),
  };
}

/**
 * The ids for a mount handed to a program with --fd: this process's
 * namespace's when it runs in one of yours (under \`podman unshare\`), else
 * the layout \`run\` gives (your uid as 0, your subordinate ids as 1..), so
 * that on the host the image's root-owned files are yours.
 */
function fdTarget(userns?: string): Target {
  const uidMap = parseIdMapText(readFileSync('/proc/self/uid_map', 'utf8'));
  if (!isInitialIdMap(uidMap)) return withUserns(namespaceOf(undefined), userns);
  const account = lookupAccount(process.getuid!());
  if (!account) usage(`uid ${process.getuid!()} has no entry in /etc/passwd`);
  const own = { name: 'the program', ns: '', podman: false, uidMap: namespaceMap(account.uid, account.subuids), gidMap: namespaceMap(account.gid, account.subgids) };
  return withUserns(own, userns);
}

function namespaceOf(into: string | undefined): Target {
  if (into === undefined) {
    const uidMap = parseIdMapText(readFileSync('/proc/self/uid_map', 'utf8'));
    if (isInitialIdMap(uidMap)) {
      usage('this process runs in the host\'s namespaces, where you cannot attach a mount: name a namespace of yours with --into podman or --into PID, run this under `podman unshare`, or use `mountgate run`');
    }
    const pause = findPausePid();
    const podman = pause !== undefined && mountNamespaceOf('self') === mountNamespaceOf(pause);
    const ns = podman ? holderKey(pause) : holderKey(process.pid);
    return { name: podman ? `podman's namespace (pause process ${pause})` : 'this process\'s namespace', ns, podman, uidMap, gidMap: parseIdMapText(readFileSync('/proc/self/gid_map', 'utf8')) };
  }
  const pid = into === 'podman' ? podmanPausePid() : /^\d+$/.test(into) ? Number(into) : usage(`--into ${into}: give a process id or "podman"`);
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    usage(`--into ${into}: there is no process ${pid}`);
  }
  const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
  if (uid !== process.getuid!()) usage(`--into ${into}: process ${pid} is not yours (its uid is ${uid})`);
  const uidMap = parseIdMapText(readFileSync(`/proc/${pid}/uid_map`, 'utf8'));
  if (isInitialIdMap(uidMap)) usage(`--into ${into}: process ${pid} runs in the host's user namespace; name a process in a user namespace of yours (a container's, or podman's pause process)`);
  const name = into === 'podman' ? `podman's namespace (pause process ${pid})` : `the namespace of process ${pid}`;
  return { pid, name, ns: holderKey(pid), podman: into === 'podman' || pid === findPausePid(), uidMap, gidMap: parseIdMapText(readFileSync(`/proc/${pid}/gid_map`, 'utf8')) };
}

/**
 * What podman makes or binds over in a container's root before it starts
 * (runc's mount points, the files podman writes or binds: /etc/mtab's
 * symlink, /etc/hosts, /etc/hostname, /etc/resolv.conf, /run/.containerenv,
 * /etc/passwd and /etc/group for --userns keep-id): on a read-only root each
 * must already exist.
 */
const podmanStubs: Stub[] = [
  ...['/dev', '/proc', '/sys', '/tmp', '/run', '/etc'].map((path) => ({ kind: 'dir' as const, path })),
  { kind: 'link', path: '/etc/mtab', to: '/proc/mounts' },
  ...['/etc/hosts', '/etc/hostname', '/etc/resolv.conf', '/run/.containerenv'].map((path) => ({ kind: 'file' as const, path })),
  // podman writes its entries for --userns keep-id (and --user) into these in place.
  ...['/etc/passwd', '/etc/group'].map((path) => ({ kind: 'copy' as const, path })),
];

/** Attaches `mountFd` at `dir` inside `target` (with `stubs`, under a read-only overlay holding those of them it lacks); the fd is consumed. */
async function attachIn(target: Target, mountFd: number, dir: string, what: string, stubs: Stub[] = []): Promise<void> {
  try {
    const at = { base: '/', target: dir, what, missing: 'have' } as const;
    const step: AttachStep = stubs.length > 0 ? { op: 'stubs', fd: 3, entries: stubs, ...at } : { op: 'attach', fd: 3, ...at };
    if (target.pid === undefined) {
      // Already in the namespace: attach from this process, or from a helper started here.
      const st = statSync(dir, { throwIfNoEntry: false });
      if (!st?.isDirectory()) usage(`${dir} is not a directory in ${target.name}`);
      if (step.op === 'attach') {
        moveMount(mountFd, dir);
        return;
      }
    } else if (!statSync(`/proc/${target.pid}/root${dir}`, { throwIfNoEntry: false })?.isDirectory()) {
      // The target's view of the path, through its root (ours to look at: the process is ours).
      usage(`${dir} is not a directory in ${target.name}`);
    }
    const enter = target.pid === undefined ? [] : ['nsenter', '--user', '--mount', '--preserve-credentials', `--target=${target.pid}`, '--'];
    const argv = [...enter, ...attachHelperArgv([step], ['true'])];
    const code = await new Promise<number>((done, fail) => {
      const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'inherit', 'inherit', mountFd] });
      child.once('error', fail);
      child.once('exit', (c, signal) => done(c ?? (signal ? 128 : 1)));
    });
    if (code !== 0) throw new MountgateError('Internal', `cannot attach ${what} at ${dir} in ${target.name} (the attach helper exited ${code})`);
  } finally {
    try {
      closeSync(mountFd);
    } catch {
      // the in-process attach consumed nothing; closed either way
    }
  }
}

/**
 * What mountgate attached where, kept in $XDG_RUNTIME_DIR/mountgate/attached.json
 * so that `mountgate ls` can say which mounts a namespace has and which were
 * lost with podman's previous pause process (`podman system migrate`, a
 * reboot: nothing tells us it went), and run the same commands again.
 */
interface Attached {
  /** The mount namespace it went into, and the process that held it (none: the command's own). */
  ns: string;
  pid: number | null;
  podman: boolean;
  dir: string;
  what: string;
  /** The mountgate command that attaches it again (for podman's namespace: with --into podman). */
  argv: string[];
}

function recordsFile(): string | undefined {
  const dir = runtimeDirs().find((d) => statSync(d, { throwIfNoEntry: false })?.isDirectory());
  return dir === undefined ? undefined : join(dir, 'mountgate', 'attached.json');
}

function readRecords(): Attached[] {
  const file = recordsFile();
  try {
    return file ? (JSON.parse(readFileSync(file, 'utf8')) as Attached[]) : [];
  } catch {
    return [];
  }
}

/** The records, without those of namespaces whose process is gone (podman's stay: they can be attached again). */
function liveRecords(records: Attached[]): Attached[] {
  return records.filter((r) => r.podman || (r.pid !== null && holderKey(r.pid) === r.ns));
}

/**
 * Replaces the records with `change(records)`, holding an exclusive flock on
 * attached.lock beside them from the read to the rename, so that mountgate
 * commands running at once (two mounts into one namespace) each add their
 * record to what the other wrote, not to what both read. The new file is
 * renamed into place: a reader without the lock sees the old or the new.
 */
function updateRecords(change: (records: Attached[]) => Attached[]): void {
  const file = recordsFile();
  if (!file) return;
  mkdirSync(join(file, '..'), { recursive: true, mode: 0o700 });
  const lock = openSync(`${file.replace(/\.json$/, '')}.lock`, fsConstants.O_RDWR | fsConstants.O_CREAT, 0o600);
  try {
    flock(lock, LOCK_EX);
    const next = liveRecords(change(readRecords()));
    writeFileSync(`${file}.new`, `${JSON.stringify(next, null, 1)}\n`, { mode: 0o600 });
    renameSync(`${file}.new`, file);
  } finally {
    closeSync(lock); // and with it the lock
  }
}

function remember(target: Target, dir: string, what: string, argv: string[]): void {
  const record: Attached = { ns: target.ns, pid: target.pid ?? null, podman: target.podman, dir, what, argv: target.podman ? [...argv, '--into', 'podman'] : argv };
  updateRecords((records) => [...records.filter((r) => !(r.ns === target.ns && r.dir === dir)), record]);
}

/** podman's records from a namespace that is no longer podman's. */
function lostRecords(records: Attached[], podmanNs: string): Attached[] {
  return records.filter((r) => r.podman && r.ns !== podmanNs);
}

function warnLost(target: Target): void {
  if (!target.podman || process.env.MOUNTGATE_REATTACHING) return;
  const lost = lostRecords(readRecords(), target.ns);
  if (lost.length > 0) {
    process.stderr.write(`mountgate: note: ${lost.length} mount(s) attached in podman's namespace before its pause process was replaced are gone (${lost.map((r) => r.dir).join(', ')}); \`mountgate ls --into podman --reattach\` attaches them again\n`);
  }
}

/** Mount points of the namespace of process `pid` (or this one). */
function mountPointsOf(pid: number | 'self'): Set<string> {
  const unescape = (p: string) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  try {
    return new Set(readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n').filter(Boolean).map((l) => unescape(l.split(' ')[4]!)));
  } catch {
    return new Set();
  }
}



/** The bind request for `spec`, with owner= in the target namespace's terms. */
function bindRequest(spec: ReturnType<typeof parseBindSpec>, target: Target): BindRequest {
  const uid = process.getuid!();
  const account = lookupAccount(uid);
  if (!account) usage(`uid ${uid} has no entry in /etc/passwd`);
  return {
    uidMap: spec.uid === undefined ? identityMap(controlledIds(uid, account.subuids)) : ownerMap(uid, account.subuids, target.uidMap, spec.uid),
    gidMap: spec.gid === undefined ? identityMap(controlledIds(account.gid, account.subgids)) : ownerMap(account.gid, account.subgids, target.gidMap, spec.gid),
    ...(spec.readOnly ? { readOnly: true } : {}),
    ...(spec.noexec ? { noexec: true } : {}),
  };
}

const intoHelp = `
Where the mount goes:
  (no --into)      the namespace this command runs in: run it under
                   \`podman unshare\` (or in any user+mount namespace of yours)
  --into podman    podman's rootless pause process's namespace, which every
                   rootless container of yours starts from (a container
                   started afterwards sees the mount: podman run --rootfs DIR:O,
                   or -v DIR:/dst)
  --into PID       the namespace of a process of yours, e.g. a running
                   container's (podman inspect -f '{{.State.Pid}}' NAME)
The mount lasts as long as that namespace: \`podman system migrate\` or a
reboot ends podman's, and a later podman command starts a new one without it.`;

/** mount --fd N -- COMMAND: the image's mount as COMMAND's fd N; resolves with COMMAND's status. */
async function mountForCommand(program: Command, ref: string, fdText: string, command: string[], opts: { into?: string; userns?: string; forPodman?: boolean; json?: boolean }): Promise<number> {
  const n = /^\d{1,3}$/.test(fdText) ? Number(fdText) : NaN;
  if (!(n >= fdRange.min && n <= fdRange.max)) usage(`--fd ${fdText}: give a number from ${fdRange.min} to ${fdRange.max} (0-2 are standard input, output and error)`);
  if (opts.into !== undefined || opts.forPodman || opts.json) usage(`--fd attaches nothing: it does not go with ${opts.into !== undefined ? '--into' : opts.forPodman ? '--for-podman' : '--json'}`);
  if (command.length === 0) usage(`--fd ${n}: give the program to run after --, e.g. mountgate mount ${ref} --fd ${n} -- sh -c 'ls /proc/self/fd/${n}/'`);
  const target = fdTarget(opts.userns);
  const { mountFd } = await withBroker(program, async (b) => {
    const { id } = resolveImageRef(await b.listImages(), ref);
    return b.mountImage(id, { uidMap: target.uidMap, gidMap: target.gidMap });
  });
  return runWithFd(mountFd, n, command);
}

export function register(program: Command): void {
  program
    .command('mount')
    .description('attach one of your images (read-only) at DIR in an existing namespace of yours')
    .argument('<image>', 'an id, an id prefix of at least 8 characters, or a name')
    .argument('[dir]', 'an existing directory, as the target namespace sees it (none with --fd)')
    .argument('[command...]', 'with --fd: the program to run and its arguments (after --)')
    .option('--into <pid|podman>', 'the namespace to attach in (default: this process\'s)')
    .option('--fd <n>', `attach nothing: run COMMAND with the mount as its fd N (${fdRange.min}-${fdRange.max})`)
    .option('--userns <keep-id[:uid=N,gid=N]>', 'owners as containers run with podman\'s --userns with the same value see them (default: as the namespace itself does)')
    .option('--for-podman', 'a read-only root for podman run --rootfs DIR: adds the few paths podman needs that the image lacks, in a tmpfs over it')
    .option('--json', 'print {"image", "dir", "into"}')
    .addHelpText('after', `${intoHelp}

The image's owners appear as they are in the image to the processes of the
target namespace: podman run --rootfs DIR sees root's files as 0 and group 42
as 42. Containers run with --userns keep-id have a map of their own (your uid
keeps its number, or becomes N with keep-id:uid=N, and the ids below it shift
by one): mount the image for them with the same --userns value, at a
directory of its own.

A read-only root for podman (--rootfs DIR, no :O) must already have what
podman makes or binds over before the container starts (the /etc/mtab
symlink, /etc/hosts, /etc/hostname, /etc/resolv.conf, /etc/passwd,
/etc/group, /run/.containerenv, the mount points /dev /proc /sys /tmp /run):
--for-podman puts those the image lacks, empty, in a small tmpfs layered over
it, and the mount stays read-only. For a writable root (a layer of podman's
own, thrown away with the container) give podman DIR:O on a plain mount.

\`mountgate ls --into podman\` shows what is attached there, and what was lost
with an earlier pause process; \`mountgate ls --into podman --reattach\`
attaches that again.

With --fd N -- COMMAND, nothing is attached: COMMAND runs with the mount as
its fd N (a detached mount; owners as \`run\` shows them: the image's root as
you), and the mount goes when its last fd closes. COMMAND can read the image
through it (/proc/self/fd/N/PATH, openat(N, PATH)), or attach it with
move_mount(N, "", AT_FDCWD, DIR, MOVE_MOUNT_F_EMPTY_PATH) in a mount namespace
it owns (e.g. after unshare -Urm). The kernel does not let it clone the mount,
so bwrap 0.8's --bind-fd/--ro-bind-fd cannot take it (for bwrap, see
\`mountgate run --image\` in README).

Examples:
  mountgate mount tools --fd 3 -- sh -c 'cat /proc/self/fd/3/etc/os-release'
  mountgate mount tools ~/rootfs --into podman --for-podman
  podman run --rm --network none --rootfs ~/rootfs /bin/sh -c 'cat /etc/os-release'
  mountgate mount tools ~/rootfs-rw --into podman
  podman run --rm --network none --rootfs ~/rootfs-rw:O /bin/sh
  podman unshare mountgate mount tools /mnt/tools`)
    .action(async (ref: string, dir: string | undefined, command: string[], opts: { into?: string; fd?: string; userns?: string; forPodman?: boolean; json?: boolean }) => {
      if (opts.fd !== undefined) {
        process.exitCode = await mountForCommand(program, ref, opts.fd, [...(dir === undefined ? [] : [dir]), ...command], opts);
        return;
      }
      if (dir === undefined) usage('mount: give the directory to attach the image at (or --fd N -- COMMAND)');
      if (command.length > 0) usage(`mount: unexpected argument ${command[0]} (a command goes with --fd N)`);
      const target = targetOf(opts.into, opts.userns);
      warnLost(target);
      const abs = resolve(dir);
      const { id, mountFd } = await withBroker(program, async (b) => {
        const { id } = resolveImageRef(await b.listImages(), ref);
        return { id, ...(await b.mountImage(id, { uidMap: target.uidMap, gidMap: target.gidMap })) };
      });
      await attachIn(target, mountFd, abs, `the image ${ref}`, opts.forPodman ? podmanStubs : []);
      remember(target, abs, `the image ${ref}`, ['mount', id, abs, ...(opts.userns ? ['--userns', opts.userns] : []), ...(opts.forPodman ? ['--for-podman'] : [])]);
      say(opts.json ? JSON.stringify({ image: id, dir: abs, into: target.pid ?? null }) : `${ref} mounted at ${abs} in ${target.name}`);
    });

  program
    .command('bind')
    .description('attach an idmapped bind of a directory you own at DIR in an existing namespace of yours')
    .argument('<src>', 'a directory you own, on the host')
    .argument('<dir[:opts]>', 'an existing directory, as the target namespace sees it; OPTS: ro, noexec, owner=N, uid=N, gid=N')
    .option('--into <pid|podman>', 'the namespace to attach in (default: this process\'s)')
    .option('--userns <keep-id[:uid=N,gid=N]>', 'owner=N as containers run with podman\'s --userns with the same value count ids (default: as the namespace itself does)')
    .option('--json', 'print {"source", "dir", "into"}')
    .addHelpText('after', `${intoHelp}

owner=N makes your files appear as uid/gid N in the target namespace (by its
own uid_map), and files N creates there land on disk as yours: what podman's
-v SRC:DST:idmap would do, on a kernel and runtime where it cannot.

SRC must be opened on the host: run \`mountgate bind\` outside \`podman unshare\`
with --into podman (inside it, the directory belongs to podman's mount
namespace, which the broker cannot clone from).

Examples:
  mkdir -p ~/.cache/vol && mountgate bind ~/src ~/.cache/vol:owner=1000 --into podman
  podman run -v ~/.cache/vol:/src IMAGE ls -ln /src`)
    .action(async (src: string, dirSpec: string, opts: { into?: string; userns?: string; json?: boolean }) => {
      const absSpec = dirSpec.startsWith('/') ? dirSpec : resolve(dirSpec);
      const spec = parseBindSpec(`${src}:${absSpec}`);
      const target = targetOf(opts.into, opts.userns);
      warnLost(target);
      let fd: number;
      try {
        fd = openSync(resolve(spec.source), fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
      } catch (err) {
        usage(`cannot open ${spec.source}: ${(err as Error).message}`);
      }
      let mountFd: number;
      try {
        if (!fstatSync(fd).isDirectory()) usage(`${spec.source} is not a directory`);
        ({ mountFd } = await withBroker(program, (b) => b.bindIdmapped(fd, bindRequest(spec, target))).catch((err: Error) => {
          if (target.pid === undefined && /not in the broker's mount namespace/.test(err.message)) {
            throw new MountgateError('PolicyDenied', `${err.message}. You are in a namespace of your own (uid_map ${showIdMap(target.uidMap)}): run \`mountgate bind ${src} ${dirSpec} --into podman\` (or --into PID) from the host instead`);
          }
          throw err;
        }));
      } finally {
        closeSync(fd);
      }
      await attachIn(target, mountFd, spec.target, `the bind of ${spec.source}`);
      remember(target, spec.target, `the bind of ${resolve(spec.source)}`, ['bind', resolve(spec.source), absSpec, ...(opts.userns ? ['--userns', opts.userns] : [])]);
      say(opts.json ? JSON.stringify({ source: resolve(spec.source), dir: spec.target, into: target.pid ?? null }) : `${spec.source} bound at ${spec.target} in ${target.name}`);
    });

  program
    .command('umount')
    .description('detach a mount at DIR in an existing namespace of yours')
    .argument('<dir>', 'the mount point, as the target namespace sees it')
    .option('--into <pid|podman>', 'the namespace (default: this process\'s)')
    .addHelpText('after', '\nExample:\n  mountgate umount ~/.local/share/tools --into podman')
    .action(async (dir: string, opts: { into?: string }) => {
      const target = targetOf(opts.into);
      const abs = resolve(dir);
      const argv = [...(target.pid === undefined ? [] : ['nsenter', '--user', '--mount', '--preserve-credentials', `--target=${target.pid}`, '--']), 'umount', '--lazy', abs];
      const code = await new Promise<number>((done, fail) => {
        const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'inherit', 'inherit'] });
        child.once('error', fail);
        child.once('exit', (c) => done(c ?? 1));
      });
      if (code !== 0) throw new MountgateError('Internal', `cannot detach ${abs} in ${target.name} (umount exited ${code})`);
      updateRecords((records) => records.filter((r) => !(r.ns === target.ns && r.dir === abs)));
      say(`${abs} detached in ${target.name}`);
    });

  program
    .command('ls')
    .description('what mountgate attached in your namespaces, and what podman\'s lost with its pause process')
    .option('--into <pid|podman>', 'only that namespace\'s (default: every one still there, and podman\'s lost ones)')
    .option('--reattach', 'attach again what podman\'s namespace lost, with the commands that attached it')
    .option('--forget', 'forget what podman\'s namespace lost')
    .option('--json', 'print [{"state", "dir", "what", "into", "command"}]')
    .addHelpText('after', `
States:
  attached   mounted there now
  detached   that namespace has nothing mounted at the directory any more
  lost       attached in podman's namespace, which ended with its pause
             process (\`podman system migrate\`, a reboot, \`podman system reset\`);
             later podman commands run in a new one without it. --reattach
             runs the commands again (podman's pause process must be running:
             \`podman unshare true\` starts it).
Mounts attached by anything else are not listed. The records live in
$XDG_RUNTIME_DIR/mountgate/attached.json (written under a lock on attached.lock).`)
    .action(async (opts: { into?: string; reattach?: boolean; forget?: boolean; json?: boolean }) => {
      const pausePid = findPausePid();
      const podmanNs = pausePid === undefined ? '' : holderKey(pausePid);
      const only = opts.into === undefined ? undefined : opts.into === 'podman' ? { podman: true, ns: podmanNs } : { podman: false, ns: namespaceOf(opts.into).ns };
      let records = readRecords().filter((r) => !only || (only.podman ? r.podman : r.ns === only.ns));
      const lost = lostRecords(records, podmanNs);
      if (opts.reattach || opts.forget) {
        const done: Attached[] = [];
        for (const r of lost) {
          if (opts.forget) {
            done.push(r);
            continue;
          }
          const busAddress = program.opts<{ busAddress?: string }>().busAddress;
          const argv = [process.argv[1]!, ...(busAddress ? ['--bus-address', busAddress] : []), ...r.argv];
          const code = await new Promise<number>((ok, fail) => {
            const child = spawn(process.execPath, argv, { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, MOUNTGATE_REATTACHING: '1' } });
            child.once('error', fail);
            child.once('exit', (c) => ok(c ?? 1));
          });
          if (code === 0) done.push(r);
          else process.exitCode = code;
        }
        const gone = new Set(done.map((r) => `${r.ns} ${r.dir}`));
        updateRecords((records) => records.filter((r) => !gone.has(`${r.ns} ${r.dir}`)));
        records = readRecords().filter((r) => !only || (only.podman ? r.podman : r.ns === only.ns));
      } else {
        updateRecords((records) => records); // drops the records of namespaces that are gone
      }
      const rows = records.flatMap((r) => {
        const live = r.podman ? (r.ns === podmanNs ? pausePid! : undefined) : r.pid !== null && holderKey(r.pid) === r.ns ? r.pid : undefined;
        if (live === undefined && !r.podman) return [];
        const state = live === undefined ? 'lost' : mountPointsOf(live).has(r.dir) ? 'attached' : 'detached';
        const into = r.podman ? 'podman' : String(r.pid);
        return [{ state, dir: r.dir, what: r.what, into, command: `mountgate ${r.argv.join(' ')}` }];
      });
      if (opts.json) {
        say(JSON.stringify(rows));
        return;
      }
      for (const row of rows) say(`${row.state.padEnd(9)} ${row.dir}  ${row.what} (into ${row.into})`);
      const nowLost = rows.filter((r) => r.state === 'lost').length;
      if (nowLost > 0) {
        say(`${nowLost} lost with podman's earlier pause process${pausePid === undefined ? ' (none is running now: `podman unshare true` starts one)' : ''}: \`mountgate ls --into podman --reattach\` attaches them again`);
      }
    });
}
