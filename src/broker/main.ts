// mountgated: the one command that starts the whole broker. It runs as root
// and stays the privileged executor (executor.ts: it only mounts). By
// default it starts the front (front.ts) itself, as the unprivileged front
// user with one end of a private socketpair; a front that dies after it came
// up is restarted (its state is on disk). With --accept-front it starts no
// front: the front runs as a service of its own (systemd/mountgate-front.service,
// in a sandbox the executor cannot have) and connects to the executor's
// socket, which systemd passes (mountgated.socket) or the executor makes at
// --front-socket; only the front's user may connect, one front at a time.
// Either way the executor hands the front its settings, the kernel features
// and the policy file's text; SIGHUP (or the front's own request) re-reads
// the policy for the front; SIGTERM stops the executor (and a front it started).
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, closeSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { parsePasswd } from '../accounts/parse.js';
import { exitCodes } from '../errors.js';
import { packageVersion } from '../paths.js';
import { probeFeatures, type KernelFeatures } from '../sys/features.js';
import * as sys from '../sys/syscalls.js';
import { UserNamespaceCache } from '../sys/userns.js';
import { stdoutAudit } from './audit.js';
import { Channel, type Frame } from './channel.js';
import { serveExecutor } from './executor.js';
import { MountLocker } from './lock.js';
import { brokerEnv, nodeFlags } from './node-flags.js';
import { watchEventLoop } from './loop-watch.js';
import { readPolicyText } from './policy-store.js';

interface Options {
  busAddress?: string;
  policy: string;
  stateDir: string;
  runtimeDir: string;
  frontUser: string;
  erofsBacking: 'auto' | 'loop';
  fdDeadlineMs: string;
  acceptFront?: boolean;
  frontSocket: string;
}

const frontPath = new URL('./front.js', import.meta.url).pathname;

/**
 * Node flags for the front, for benches and profiling only (--cpu-prof,
 * --trace-gc, ...): MOUNTGATE_FRONT_NODE_OPTIONS, split at spaces. The front
 * gets no NODE_OPTIONS of its own environment.
 */
const frontNodeFlags = (process.env.MOUNTGATE_FRONT_NODE_OPTIONS ?? '').split(' ').filter(Boolean);

function fail(message: string, code: number): never {
  process.stderr.write(`mountgated: ${message}\n`);
  process.exit(code);
}

/**
 * The fd of a connection net.Server accepted, as a close-on-exec duplicate
 * the caller owns (the Channel passes fds over it, which net.Socket cannot).
 * The server pauses new connections, so nothing was read from it.
 */
function takeConnection(socket: Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('this Node.js does not expose the fd of an accepted connection');
  const mine = sys.dupCloexec(fd);
  socket.destroy();
  return mine;
}

/** Listens on the socket systemd passed (LISTEN_FDS, fd 3), or else binds `path` for the front's group only. */
function listenForFronts(server: Server, path: string, gid: number): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    if (process.env.LISTEN_PID === String(process.pid) && process.env.LISTEN_FDS === '1') {
      // sd_listen_fds(3): ours, not the helpers'.
      for (const v of ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES']) delete process.env[v];
      sys.setCloexec(3);
      server.listen({ fd: 3 }, () => resolve('the socket systemd passed'));
      return;
    }
    // A socket left by an executor that was killed; never anything else.
    if (lstatSync(path, { throwIfNoEntry: false })?.isSocket()) rmSync(path);
    // Born 0600 (the umask), then root:front-group 0660: nobody else can connect in between.
    const umask = process.umask(0o177);
    server.listen({ path }, () => {
      process.umask(umask);
      chownSync(path, 0, gid);
      chmodSync(path, 0o660);
      resolve(path);
    });
  });
}

/** The front's user: its uid and gid, from /etc/passwd. */
function frontAccount(name: string): { uid: number; gid: number } {
  const entry = parsePasswd(readFileSync('/etc/passwd', 'utf8')).find((p) => p.name === name);
  if (!entry) {
    fail(`the front's user ${name} does not exist; create it: useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ${name}`, exitCodes.Usage);
  }
  if (entry.uid === 0) fail(`the front's user ${name} is root; it must be an unprivileged system user`, exitCodes.Usage);
  return { uid: entry.uid, gid: entry.gid };
}

/** The state directory belongs to the front (it keeps the store and the registry); handed over once, recursively. */
function giveStateDir(dir: string, uid: number, gid: number): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (lstatSync(dir).uid === uid) return;
  // Private to the front, as StateDirectoryMode=0700 made it before the unit
  // stopped managing it (changing it later is the owner's business).
  chmodSync(dir, 0o700);
  const walk = (path: string) => {
    const st = lstatSync(path);
    if (st.isDirectory()) for (const name of readdirSync(path)) walk(join(path, name));
    chownSync(path, uid, gid);
  };
  walk(dir);
}

async function main(opts: Options): Promise<void> {
  if (process.getuid?.() !== 0) fail('must run as root: it performs mounts and writes uid maps for its callers', exitCodes.PolicyDenied);
  const fdDeadlineMs = Number(opts.fdDeadlineMs);
  if (!Number.isInteger(fdDeadlineMs) || fdDeadlineMs < 100) fail(`--fd-deadline-ms must be a whole number of milliseconds, at least 100 (got ${opts.fdDeadlineMs})`, exitCodes.Usage);
  const front = frontAccount(opts.frontUser);

  // A front of its own unit has its state directory from systemd (StateDirectory=); one this process starts gets it from here.
  if (!opts.acceptFront) giveStateDir(opts.stateDir, front.uid, front.gid);
  mkdirSync(opts.runtimeDir, { recursive: true, mode: 0o700 });
  const userns = new UserNamespaceCache();
  // On the store's file system (features.ts says why), before the front runs;
  // with --accept-front, when the first front connects (the directory is its unit's).
  let probed: Promise<KernelFeatures> | undefined;
  const kernelFeatures = (): Promise<KernelFeatures> => {
    probed ??= (async () => {
      const st = lstatSync(opts.stateDir, { throwIfNoEntry: false });
      if (!st?.isDirectory() || st.uid !== front.uid) throw new Error(`the state directory ${opts.stateDir} is not a directory of the front's user ${opts.frontUser}`);
      const found = await probeFeatures(userns, opts.stateDir);
      // --erofs-backing loop forces the loop-device path (kernels before 6.12 take it by themselves).
      return opts.erofsBacking === 'loop' ? { ...found, fileBackedErofs: false } : found;
    })();
    probed.catch(() => { probed = undefined; });
    return probed;
  };
  if (!opts.acceptFront) await kernelFeatures();
  const locker = new MountLocker(opts.runtimeDir);
  const log = (message: string) => stdoutAudit({ event: 'error', message: `executor: ${message}` });
  const loop = watchEventLoop();

  let child: ChildProcess | undefined;
  let channel: Channel | undefined;
  let server: Server | undefined;
  let stopping = false;
  const restarts: number[] = [];

  const cleanup = () => {
    server?.close();
    locker.close();
    userns.close();
  };

  const sendPolicy = (ch: Channel) => void ch.send({ type: 'policy', policy: readPolicyText(opts.policy) }).catch(() => undefined);
  /** Everything the front needs to run, sent first on a new channel; then the executor serves it. */
  const serveFront = async (ch: Channel) => {
    const features = await kernelFeatures();
    serveExecutor(ch, { userns, locker, frontUid: front.uid }, log);
    ch.on('frame', (frame: Frame) => {
      if (frame.type === 'reload-policy') sendPolicy(ch);
    });
    await ch.send({
      type: 'hello', features, policy: readPolicyText(opts.policy), policyPath: opts.policy, stateDir: opts.stateDir, fdDeadlineMs,
      ...(opts.busAddress ? { busAddress: opts.busAddress } : {}),
    });
  };

  const startFront = () => {
    const [mine, theirs] = sys.socketpair();
    child = spawn(process.execPath, [...nodeFlags.front, ...frontNodeFlags, frontPath], {
      uid: front.uid,
      gid: front.gid,
      cwd: '/',
      env: { PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8', ...brokerEnv, ...(process.env.DBUS_SYSTEM_BUS_ADDRESS ? { DBUS_SYSTEM_BUS_ADDRESS: process.env.DBUS_SYSTEM_BUS_ADDRESS } : {}) },
      stdio: ['ignore', 'inherit', 'inherit', theirs],
    });
    closeSync(theirs);
    const ch = new Channel(mine);
    channel = ch;
    void serveFront(ch).catch(() => undefined);
    let up = false;
    ch.on('frame', (frame: Frame) => {
      if (frame.type === 'up') up = true;
    });
    child.once('exit', (code, signal) => {
      ch.close();
      if (stopping) return;
      if (!up) {
        // It never came up (a bad policy, no bus): that is the broker's answer.
        cleanup();
        process.exit(code ?? exitCodes.Internal);
      }
      const now = Date.now();
      restarts.push(now);
      while (restarts.length && restarts[0]! < now - 60_000) restarts.shift();
      if (restarts.length > 5) {
        log(`the front died ${restarts.length} times in a minute (last: ${signal ?? code}); stopping`);
        cleanup();
        process.exit(exitCodes.Internal);
      }
      log(`the front exited (${signal ?? code}); restarting it`);
      startFront();
    });
  };

  const acceptFronts = async () => {
    server = createServer({ pauseOnConnect: true }, (socket) => {
      let fd: number;
      try {
        fd = takeConnection(socket);
      } catch (err) {
        log(`could not take a front's connection: ${(err as Error).message}`);
        socket.destroy();
        return;
      }
      const peer = sys.peerCredentials(fd);
      if (peer.uid !== front.uid || channel) {
        log(peer.uid !== front.uid
          ? `refused a connection from uid ${peer.uid} (pid ${peer.pid}): only the front's user ${opts.frontUser} may connect`
          : `refused a second front (pid ${peer.pid}): one is connected`);
        closeSync(fd);
        return;
      }
      const ch = new Channel(fd);
      channel = ch;
      ch.once('close', () => {
        if (channel === ch) channel = undefined;
        if (!stopping) log(`the front (pid ${peer.pid}) disconnected; waiting for the next one`);
      });
      serveFront(ch).catch((err: Error) => {
        log(`cannot serve the front: ${err.message}`);
        ch.close();
      });
    });
    const where = await listenForFronts(server, opts.frontSocket, front.gid);
    stdoutAudit({ event: 'start', message: `executor: waiting for the front on ${where}` });
  };

  if (opts.acceptFront) await acceptFronts();
  else startFront();

  process.on('SIGHUP', () => {
    if (channel) sendPolicy(channel);
  });
  const stop = () => {
    if (stopping) return;
    stopping = true;
    stdoutAudit({ event: 'stop', process: 'executor', ...loop() });
    const c = child;
    const finish = () => {
      channel?.close();
      cleanup();
      process.exit(0);
    };
    if (!c || c.exitCode !== null || c.signalCode !== null) return finish();
    const killer = setTimeout(() => c.kill('SIGKILL'), 5000);
    c.once('exit', () => {
      clearTimeout(killer);
      finish();
    });
    c.kill('SIGTERM');
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

const program = new Command('mountgated')
  .description(
    'The mountgate broker: idmapped bind mounts and composefs mounts for unprivileged users, over D-Bus. Runs as root as the executor (it only mounts) and starts the unprivileged front (bus, policy, images) as --front-user.',
  )
  .version(packageVersion)
  .option('--bus-address <address>', 'D-Bus address to serve on instead of the system bus (tests, demos)')
  .option('--policy <file>', 'policy file; missing means the built-in default', '/etc/mountgate/policy.json')
  .option('--state-dir <dir>', "the broker's state directory (the store and the registry; owned by the front's user)", '/var/lib/mountgate')
  .option('--runtime-dir <dir>', "the executor's runtime directory (root only: its lock helper mounts a private tmpfs over it, in that helper's own mount namespace, to stage binds)", '/run/mountgate')
  .option('--front-user <name>', 'the unprivileged system user the front runs as', 'mountgate')
  .addOption(new Option('--erofs-backing <how>', 'how EROFS images are mounted: auto (file-backed when the kernel can) or loop (always a loop device)').choices(['auto', 'loop']).default('auto'))
  .option('--accept-front', "start no front: accept the front's connection (it runs as a service of its own) on the socket systemd passes, or else on --front-socket")
  .option('--front-socket <path>', 'with --accept-front and no socket from systemd: where to listen (root and the front\'s group only)', '/run/mountgate-executor.sock')
  .option('--fd-deadline-ms <ms>', 'how long an fd a caller passed may take to answer fstat/statfs before its call fails with Timeout (a stopped FUSE server never answers)', '5000')
  .addHelpText('after', '\nExample:\n  mountgated --bus-address unix:path=/run/mountgate-test/bus --policy ./policy.json\n')
  .action((opts: Options) => main(opts).catch((err: Error) => fail(err.stack ?? String(err), exitCodes.Internal)));

program.parseAsync(process.argv);
