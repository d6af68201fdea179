// The unprivileged front of mountgated, started by it as the front's own
// system user with the executor's channel as fd 3. It owns the bus name and
// does everything but mounting: identity, schema, policy, planning, manifest
// parsing, image writing, the store, and every read of caller data (off the
// event loop, with deadlines). The executor sends it the kernel features and
// the policy file's text; it sends the executor plans.
//   node front.js --bus-address ADDR --policy FILE --state-dir DIR --fd-deadline-ms N
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { exitCodes } from '../errors.js';
import { openBus, dbus } from '../bus/connect.js';
import { busName } from '../bus/names.js';
import { packageVersion } from '../paths.js';
import type { KernelFeatures } from '../sys/features.js';
import { dieWithParent, noNewPrivileges } from '../sys/syscalls.js';
import { stdoutAudit } from './audit.js';
import { Channel, type Frame } from './channel.js';
import { ExecutorClient } from './executor-client.js';
import { FairQueue } from './fair-queue.js';
import { fdProber } from './fd-probe.js';
import { ImageService } from './images.js';
import { methodRecords } from './methods.js';
import { PolicyStore, policyFrom, type PolicyText } from './policy-store.js';
import { BrokerService } from './service.js';

function arg(name: string): string | undefined {
  const at = process.argv.indexOf(name);
  return at >= 0 ? process.argv[at + 1] : undefined;
}

function fail(message: string, code: number): never {
  process.stderr.write(`mountgated: ${message}\n`);
  process.exit(code);
}

async function main(): Promise<void> {
  // The front never outlives the executor that started it, whatever becomes of their channel.
  if (!dieWithParent(process.ppid)) process.exit(exitCodes.Internal);
  // Nothing this process starts (fd probes) can gain privileges.
  noNewPrivileges();
  const policyPath = arg('--policy')!;
  const stateDir = arg('--state-dir')!;
  const busAddress = arg('--bus-address');
  const fdDeadlineMs = Number(arg('--fd-deadline-ms'));

  const channel = new Channel(3);
  channel.on('close', () => {
    stdoutAudit({ event: 'stop', message: 'the executor closed the channel' });
    process.exit(exitCodes.Internal);
  });
  const hello = await new Promise<Frame>((resolve) => channel.once('frame', (frame: Frame) => resolve(frame)));
  const features = hello.features as KernelFeatures;

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
    images = new ImageService({ stateDir, policy: () => policy.policy, features, fdDeadlineMs });
  } catch (err) {
    // An older state that cannot be imported, a database another broker holds or a newer one wrote: said plainly.
    fail(`refusing to start: the store in ${stateDir} cannot be opened: ${(err as Error).message}`, exitCodes.Internal);
  }
  // At most four fd probes at once, over all callers, handed out round-robin between users.
  const prober = fdProber(new FairQueue(4), fdDeadlineMs);
  const methods = methodRecords({ images, prober, executor: new ExecutorClient(channel), features });

  let bus;
  try {
    bus = await openBus(busAddress);
  } catch (err) {
    fail(`cannot connect to the bus${busAddress ? ` at ${busAddress}` : ''}: ${(err as Error).message}`, exitCodes.BrokerUnavailable);
  }
  bus.on('error', (err: Error) => {
    stdoutAudit({ event: 'error', message: `bus connection failed: ${err.message}` });
    process.exit(exitCodes.BrokerUnavailable);
  });
  // The pools run before the broker takes calls: what it holds at rest is what it holds.
  await Promise.all([images.ready, prober.ready]);
  new BrokerService({ bus, policy, methods, audit: stdoutAudit }).attach();
  const reply = await bus.requestName(busName, dbus.NameFlag.DO_NOT_QUEUE);
  if (reply !== dbus.RequestNameReply.PRIMARY_OWNER) fail(`cannot own ${busName}: another broker has it, or the bus policy forbids it`, exitCodes.PolicyDenied);
  // How long the event loop that serves everyone was ever held up: the stop line reports it.
  const lag = monitorEventLoopDelay({ resolution: 20 });
  lag.enable();
  process.on('SIGTERM', () => {
    stdoutAudit({ event: 'stop', eventLoopDelayMs: { p50: lag.percentile(50) / 1e6, p99: lag.percentile(99) / 1e6, max: lag.max / 1e6 } });
    bus.disconnect();
    process.exit(0);
  });
  await channel.send({ type: 'up' });
  stdoutAudit({ event: 'ready', version: packageVersion, bus: busAddress ?? 'system', name: (bus as unknown as { name: string }).name, policy: policy.source, features, uid: process.getuid?.() });
}

main().catch((err: Error) => fail(err.stack ?? String(err), exitCodes.Internal));
