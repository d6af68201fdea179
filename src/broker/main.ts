// mountgated: the privileged broker. Runs as root on the system bus (or on the
// bus given with --bus-address), owns org.mountgate.Broker1 and serves it
// until SIGTERM. SIGHUP re-reads the policy file.
import { mkdirSync } from 'node:fs';
import { Command, Option } from 'commander';
import { openBus, dbus } from '../bus/connect.js';
import { busName } from '../bus/names.js';
import { exitCodes } from '../errors.js';
import { packageVersion } from '../paths.js';
import { probeFeatures } from '../sys/features.js';
import { UserNamespaceCache } from '../sys/userns.js';
import { stdoutAudit } from './audit.js';
import { loadPolicyFile, PolicyStore } from './policy-store.js';
import { BrokerService } from './service.js';
import { ImageService } from './images.js';
import { FairQueue } from './fair-queue.js';
import { fdProber } from './fd-probe.js';
import { MountLocker } from './lock.js';
import { methodRecords } from './methods.js';
import { join } from 'node:path';

interface Options {
  busAddress?: string;
  policy: string;
  stateDir: string;
  erofsBacking: 'auto' | 'loop';
  fdDeadlineMs: string;
}

function fail(message: string, code: number): never {
  process.stderr.write(`mountgated: ${message}\n`);
  process.exit(code);
}

async function main(opts: Options): Promise<void> {
  if (process.getuid?.() !== 0) fail('must run as root: it performs mounts and writes uid maps for its callers', exitCodes.PolicyDenied);

  const loaded = loadPolicyFile(opts.policy);
  if (!loaded.ok) {
    for (const e of loaded.errors) stdoutAudit({ event: 'policy', allowed: false, message: e });
    fail(`refusing to start: the policy file ${opts.policy} is invalid (see the errors above)`, exitCodes.InvalidRequest);
  }
  const policy = new PolicyStore(opts.policy, loaded);

  mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
  const userns = new UserNamespaceCache();
  const probed = await probeFeatures(userns, opts.stateDir);
  // --erofs-backing loop forces the loop-device path (kernels before 6.12 take it by themselves).
  const features = opts.erofsBacking === 'loop' ? { ...probed, fileBackedErofs: false } : probed;

  let bus;
  try {
    bus = await openBus(opts.busAddress);
  } catch (err) {
    fail(`cannot connect to the bus${opts.busAddress ? ` at ${opts.busAddress}` : ''}: ${(err as Error).message}`, exitCodes.BrokerUnavailable);
  }
  bus.on('error', (err: Error) => {
    stdoutAudit({ event: 'error', message: `bus connection failed: ${err.message}` });
    process.exit(exitCodes.BrokerUnavailable);
  });

  const fdDeadlineMs = Number(opts.fdDeadlineMs);
  if (!Number.isInteger(fdDeadlineMs) || fdDeadlineMs < 100) fail(`--fd-deadline-ms must be a whole number of milliseconds, at least 100 (got ${opts.fdDeadlineMs})`, exitCodes.Usage);
  const images = new ImageService({ stateDir: opts.stateDir, policy: () => policy.policy, features });
  const locker = new MountLocker(join(opts.stateDir, 'stage'));
  // At most four fd probes at once, over all callers, handed out round-robin between users.
  const prober = fdProber(new FairQueue(4), fdDeadlineMs);
  const methods = methodRecords({ images, prober, executor: { userns, locker }, features });
  const service = new BrokerService({ bus, policy, methods, audit: stdoutAudit });
  service.attach();
  const reply = await bus.requestName(busName, dbus.NameFlag.DO_NOT_QUEUE);
  if (reply !== dbus.RequestNameReply.PRIMARY_OWNER) fail(`cannot own ${busName}: another broker has it, or the bus policy forbids it`, exitCodes.PolicyDenied);

  process.on('SIGHUP', () => {
    const r = policy.reload();
    if (r.ok) stdoutAudit({ event: 'policy', allowed: true, message: `policy reloaded from ${r.source}` });
    else for (const e of r.errors) stdoutAudit({ event: 'policy', allowed: false, message: `${e} (keeping the last good policy from ${policy.source})` });
  });
  const stop = () => {
    stdoutAudit({ event: 'stop' });
    userns.close();
    locker.close();
    bus.disconnect();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  stdoutAudit({ event: 'ready', version: packageVersion, bus: opts.busAddress ?? 'system', name: (bus as unknown as { name: string }).name, policy: policy.source, features });
}

const program = new Command('mountgated')
  .description('The mountgate broker: idmapped bind mounts and composefs mounts for unprivileged users, over D-Bus.')
  .version(packageVersion)
  .option('--bus-address <address>', 'D-Bus address to serve on instead of the system bus (tests, demos)')
  .option('--policy <file>', 'policy file; missing means the built-in default', '/etc/mountgate/policy.json')
  .option('--state-dir <dir>', 'the broker\'s state directory', '/var/lib/mountgate')
  .addOption(new Option('--erofs-backing <how>', 'how EROFS images are mounted: auto (file-backed when the kernel can) or loop (always a loop device)').choices(['auto', 'loop']).default('auto'))
  .option('--fd-deadline-ms <ms>', 'how long an fd a caller passed may take to answer fstat/statfs before its call fails with Timeout (a stopped FUSE server never answers)', '5000')
  .addHelpText('after', '\nExample:\n  mountgated --bus-address unix:path=/run/mountgate-test/bus --policy ./policy.json\n')
  .action((opts: Options) => main(opts).catch((err: Error) => fail(err.stack ?? String(err), exitCodes.Internal)));

program.parseAsync(process.argv);
