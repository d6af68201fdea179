// The unprivileged front of mountgated. It owns the bus name and does
// everything but mounting: identity, schema, policy, planning, manifest
// parsing, image writing, the store, and every read of caller data (off the
// event loop, with deadlines). The executor sends it its settings, the
// kernel features and the policy file's text; it sends the executor plans,
// and asks it about mounts (the executor's mount table is the host's).
//   node front.js                 started by mountgated, the channel on fd 3
//   node front.js --connect PATH  as a service of its own (mountgate-front.service),
//                                 connecting to the executor's socket
import { exitCodes } from '../errors.js';
import { openBus, dbus } from '../bus/connect.js';
import { busName } from '../bus/names.js';
import { packageVersion } from '../paths.js';
import type { KernelFeatures } from '../sys/features.js';
import { connectUnix, dieWithParent, noNewPrivileges } from '../sys/syscalls.js';
import { AuditWriter } from './audit.js';
import { Channel, type Frame } from './channel.js';
import { ExecutorClient } from './executor-client.js';
import { FairQueue } from './fair-queue.js';
import { fdProber } from './fd-probe.js';
import { ImageService } from './images.js';
import { watchEventLoop } from './loop-watch.js';
import { methodRecords } from './methods.js';
import { PolicyStore, policyFrom, type PolicyText } from './policy-store.js';
import { BrokerService } from './service.js';

function arg(name: string): string | undefined {
  const at = process.argv.indexOf(name);
  return at >= 0 ? process.argv[at + 1] : undefined;
}

/** Audit lines leave off the event loop (audit.ts); an exit waits for them. */
const audit = new AuditWriter(1);
const stdoutAudit = audit.sink;

function fail(message: string, code: number): never {
  audit.flushSync();
  process.stderr.write(`mountgated: ${message}\n`);
  process.exit(code);
}

function openChannel(): Channel {
  const socket = arg('--connect');
  if (socket === undefined) {
    // Started by the executor: never outlive it, whatever becomes of the channel.
    if (!dieWithParent(process.ppid)) process.exit(exitCodes.Internal);
    return new Channel(3);
  }
  try {
    return new Channel(connectUnix(socket));
  } catch (err) {
    fail(`cannot reach the executor at ${socket}: ${(err as Error).message} (is mountgated.socket, or mountgated --accept-front, running?)`, exitCodes.BrokerUnavailable);
  }
}

/** Exits once the audit lines so far are written (or a second passed). */
function exitAfterAudit(code: number): void {
  void audit.drain(1000).then(() => process.exit(code));
}

async function main(): Promise<void> {
  // Nothing this process starts (fd probes) can gain privileges.
  noNewPrivileges();
  const channel = openChannel();
  channel.on('close', () => {
    stdoutAudit({ event: 'stop', message: 'the executor closed the channel' });
    exitAfterAudit(exitCodes.Internal);
  });
  const hello = await new Promise<Frame>((resolve) => channel.once('frame', (frame: Frame) => resolve(frame)));
  if (hello.type !== 'hello') fail(`the executor sent ${String(hello.type)} first, not hello`, exitCodes.Internal);
  const features = hello.features as KernelFeatures;
  const policyPath = String(hello.policyPath);
  const stateDir = String(hello.stateDir);
  const busAddress = typeof hello.busAddress === 'string' ? hello.busAddress : undefined;
  const fdDeadlineMs = Number(hello.fdDeadlineMs);

  const loaded = policyFrom(hello.policy as PolicyText, policyPath, 'default');
  if (!loaded.ok) {
    for (const e of loaded.errors) stdoutAudit({ event: 'policy', allowed: false, message: e });
    fail(`refusing to start: the policy file ${policyPath} is invalid (see the errors above)`, exitCodes.InvalidRequest);
  }
  const policy = new PolicyStore(policyPath, loaded);
  channel.on('frame', (frame: Frame) => {
    if (frame.type !== 'policy') return;
    const r = policy.reload(frame.policy as PolicyText);
    if (r.ok) stdoutAudit({ event: 'policy', allowed: true, message: `policy reloaded from ${r.source}` });
    else for (const e of r.errors) stdoutAudit({ event: 'policy', allowed: false, message: `${e} (keeping the last good policy from ${policy.source})` });
  });

  let images: ImageService;
  try {
    images = new ImageService({
      stateDir, policy: () => policy.policy, features, fdDeadlineMs,
      // The object files of removed images are deleted after their call was answered: said once they are gone.
      onDeleted: ({ deleted, failed }) => {
        stdoutAudit({ event: 'store', deleted, message: `deleted ${deleted} object file(s) no image needs any more` });
        if (failed.length > 0) stdoutAudit({ event: 'error', message: `${failed.length} object file(s) could not be deleted (the next start drops them): ${failed.join('; ')}` });
      },
    });
  } catch (err) {
    // An older state that cannot be imported, a database another broker holds or a newer one wrote: said plainly.
    fail(`refusing to start: the store in ${stateDir} cannot be opened: ${(err as Error).message}`, exitCodes.Internal);
  }
  const executor = new ExecutorClient(channel);
  // At most four fd probes at once, over all callers, handed out round-robin between users.
  const prober = fdProber(new FairQueue(4), fdDeadlineMs, (mountId, path) => executor.mountFacts(mountId, path));
  // At most sixteen plans at the executor at once (each may wait on a helper process), handed out round-robin between users.
  const methods = methodRecords({ images, prober, executor, plans: new FairQueue(16), features });
  // `systemctl reload mountgate-front`: the executor reads the policy file and sends it.
  process.on('SIGHUP', () => void channel.send({ type: 'reload-policy' }).catch(() => undefined));

  let bus;
  try {
    bus = await openBus(busAddress);
  } catch (err) {
    fail(`cannot connect to the bus${busAddress ? ` at ${busAddress}` : ''}: ${(err as Error).message}`, exitCodes.BrokerUnavailable);
  }
  bus.on('error', (err: Error) => {
    stdoutAudit({ event: 'error', message: `bus connection failed: ${err.message}` });
    exitAfterAudit(exitCodes.BrokerUnavailable);
  });
  // No helper runs yet: probers, build and upload helpers start when a call needs one and go when idle.
  new BrokerService({ bus, policy, methods, audit: stdoutAudit, durable: () => images.registry.db.durable() }).attach();
  const reply = await bus.requestName(busName, dbus.NameFlag.DO_NOT_QUEUE);
  if (reply !== dbus.RequestNameReply.PRIMARY_OWNER) fail(`cannot own ${busName}: another broker has it, or the bus policy forbids it`, exitCodes.PolicyDenied);
  // How long the event loop that serves everyone was ever held up: the stop line reports it.
  const loop = watchEventLoop();
  process.on('SIGTERM', () => {
    stdoutAudit({ event: 'stop', ...loop() });
    bus.disconnect();
    exitAfterAudit(0);
  });
  await channel.send({ type: 'up' });
  stdoutAudit({ event: 'ready', version: packageVersion, bus: busAddress ?? 'system', name: (bus as unknown as { name: string }).name, policy: policy.source, features, uid: process.getuid?.() });
}

main().catch((err: Error) => fail(err.stack ?? String(err), exitCodes.Internal));
