// `mountgate mount`, `mountgate bind` and `mountgate umount`: a mount from the
// broker attached in a user+mount namespace of yours that already exists,
// rather than in one `run` makes for a single command. The namespace is the
// one this process runs in (under `podman unshare`, say), or another
// process's, named by --into PID or --into podman (podman's rootless pause
// process, whose namespace every rootless container of yours starts from).
// Node cannot enter a mount namespace itself (it has threads), so for --into
// a small helper started in the target namespace (nsenter, then the attach
// helper) attaches the fd.
import { closeSync, fstatSync, openSync, readFileSync, statSync, constants as fsConstants } from 'node:fs';
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { lookupAccount } from '../accounts/load.js';
import { attachHelperArgv } from '../client/attach-helper.js';
import type { MountgateBroker } from '../client/broker.js';
import { isInitialIdMap, ownerMap, parseIdMapText, showIdMap } from '../client/idmaps.js';
import { resolveImageRef } from '../client/image-ref.js';
import { MountgateError } from '../errors.js';
import { controlledIds, identityMap } from '../policy/idmap.js';
import type { BindRequest, IdRange } from '../schema/types.generated.js';
import { moveMount } from '../sys/syscalls.js';
import { parseBindSpec } from './bind-spec.js';
import { UsageError } from './usage.js';

/** Where a mount goes: the namespace of this process, or of process `pid`. */
interface Target {
  pid?: number;
  /** "this process's namespace", "podman's namespace (pause process 1234)". */
  name: string;
  uidMap: IdRange[];
  gidMap: IdRange[];
}

function usage(message: string): never {
  throw new UsageError(message);
}

/** podman's rootless pause process: it holds the user and mount namespace every rootless container of yours starts in. */
function podmanPausePid(): number {
  const uid = process.getuid!();
  const dirs = [process.env.XDG_RUNTIME_DIR, `/run/user/${uid}`].filter((d): d is string => Boolean(d));
  for (const dir of dirs) {
    let text: string;
    try {
      text = readFileSync(`${dir}/libpod/tmp/pause.pid`, 'utf8');
    } catch {
      continue;
    }
    const pid = Number(text.trim());
    if (Number.isInteger(pid) && pid > 0 && statSync(`/proc/${pid}`, { throwIfNoEntry: false })) return pid;
  }
  usage(`podman's pause process is not running (no live pid in ${dirs.map((d) => `${d}/libpod/tmp/pause.pid`).join(' or ')}); any rootless podman command starts it, e.g. \`podman unshare true\``);
}

/** The namespace named by --into (a pid, or "podman"), or this process's own. */
function targetOf(into: string | undefined): Target {
  if (into === undefined) {
    const uidMap = parseIdMapText(readFileSync('/proc/self/uid_map', 'utf8'));
    if (isInitialIdMap(uidMap)) {
      usage('this process runs in the host\'s namespaces, where you cannot attach a mount: name a namespace of yours with --into podman or --into PID, run this under `podman unshare`, or use `mountgate run`');
    }
    return { name: 'this process\'s namespace', uidMap, gidMap: parseIdMapText(readFileSync('/proc/self/gid_map', 'utf8')) };
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
  return { pid, name, uidMap, gidMap: parseIdMapText(readFileSync(`/proc/${pid}/gid_map`, 'utf8')) };
}

/** Attaches `mountFd` at `dir` inside `target`; the fd is consumed. */
async function attachIn(target: Target, mountFd: number, dir: string, what: string): Promise<void> {
  try {
    if (target.pid === undefined) {
      // Already in the namespace: attach from this process.
      const st = statSync(dir, { throwIfNoEntry: false });
      if (!st?.isDirectory()) usage(`${dir} is not a directory in ${target.name}`);
      moveMount(mountFd, dir);
      return;
    }
    // The target's view of the path, through its root (ours to look at: the process is ours).
    if (!statSync(`/proc/${target.pid}/root${dir}`, { throwIfNoEntry: false })?.isDirectory()) usage(`${dir} is not a directory in ${target.name}`);
    const argv = ['nsenter', '--user', '--mount', '--preserve-credentials', `--target=${target.pid}`, '--',
      ...attachHelperArgv([{ op: 'attach', fd: 3, base: '/', target: dir, what, missing: 'have' }], ['true'])];
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

async function withBroker<T>(program: Command, fn: (b: MountgateBroker) => Promise<T>): Promise<T> {
  const { connect } = await import('../client/broker.js');
  const busAddress = program.opts<{ busAddress?: string }>().busAddress;
  const broker = await connect(busAddress ? { busAddress } : {});
  try {
    return await fn(broker);
  } finally {
    broker.close();
  }
}

function say(line: string): void {
  process.stdout.write(`${line}\n`);
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

export function register(program: Command): void {
  program
    .command('mount')
    .description('attach one of your images (read-only) at DIR in an existing namespace of yours')
    .argument('<image>', 'an id, an id prefix of at least 8 characters, or a name')
    .argument('<dir>', 'an existing directory, as the target namespace sees it')
    .option('--into <pid|podman>', 'the namespace to attach in (default: this process\'s)')
    .option('--json', 'print {"image", "dir", "into"}')
    .addHelpText('after', `${intoHelp}

For a writable root filesystem give podman the overlay: --rootfs DIR:O.

Examples:
  mountgate mount tools ~/.local/share/tools --into podman
  podman run --rootfs ~/.local/share/tools:O true
  podman unshare mountgate mount tools /mnt/tools`)
    .action(async (ref: string, dir: string, opts: { into?: string; json?: boolean }) => {
      const target = targetOf(opts.into);
      const abs = resolve(dir);
      const { id, mountFd } = await withBroker(program, async (b) => {
        const { id } = resolveImageRef(await b.listImages(), ref);
        return { id, ...(await b.mountImage(id, {})) };
      });
      await attachIn(target, mountFd, abs, `the image ${ref}`);
      say(opts.json ? JSON.stringify({ image: id, dir: abs, into: target.pid ?? null }) : `${ref} mounted at ${abs} in ${target.name}`);
    });

  program
    .command('bind')
    .description('attach an idmapped bind of a directory you own at DIR in an existing namespace of yours')
    .argument('<src>', 'a directory you own, on the host')
    .argument('<dir[:opts]>', 'an existing directory, as the target namespace sees it; OPTS: ro, noexec, owner=N, uid=N, gid=N')
    .option('--into <pid|podman>', 'the namespace to attach in (default: this process\'s)')
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
    .action(async (src: string, dirSpec: string, opts: { into?: string; json?: boolean }) => {
      const spec = parseBindSpec(`${src}:${dirSpec.startsWith('/') ? dirSpec : resolve(dirSpec)}`);
      const target = targetOf(opts.into);
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
      say(`${abs} detached in ${target.name}`);
    });
}
