// mountgate: the command-line client. Every subcommand prints errors as
// "mountgate: <sentence>" and exits with the code of its failure class
// (see `mountgate --help`); --json gives machine-readable output.
import { closeSync, constants as fsConstants, openSync, readFileSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { Command, Option } from 'commander';
import { lookupAccount } from '../accounts/load.js';
import { identityMap, controlledIds } from '../policy/idmap.js';
import type { MountgateBroker } from '../client/broker.js';
import { namespaceMap, ownerMap } from '../client/idmaps.js';
import { resolveImageRef } from '../client/image-ref.js';
import type { ImageMounts, NamespaceMounts } from '../client/namespace.js';
import { BrokerUnavailableError, exitCodes, MountgateError } from '../errors.js';
import { packageVersion } from '../paths.js';
import { trace } from '../trace.js';
import type { BindRequest } from '../schema/types.generated.js';
import { schemaKinds, type SchemaKind } from '../schema/kinds.js';
import type { ValidationIssue } from '../schema/issues.js';
import { parseBindSpec } from './bind-spec.js';
import { UsageError } from './usage.js';

// Only what every command needs is imported above; each command imports the
// rest when it runs (the bus client, the validators, the namespace code), so
// a command pays only for what it uses.
trace('modules loaded');
// With the CPU time the process used (user + system): a figure that depends far less on the machine's load than the times do.
process.once('exit', () => {
  const cpu = process.cpuUsage();
  trace(`exit (cpu ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms: user ${(cpu.user / 1000).toFixed(0)}, system ${(cpu.system / 1000).toFixed(0)})`);
});


function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** The file's bytes: a manifest is checked to be UTF-8 rather than decoded with replacement characters. */
function readInput(file: string): Buffer {
  return file === '-' ? readFileSync(0) : readFileSync(file);
}

function kindOf(file: string, text: string, guessKind: (value: unknown) => SchemaKind | undefined, explicit?: string): SchemaKind {
  if (explicit) return explicit as SchemaKind;
  // The file's name, then its directories: "bind-request.json", "policy/x.json".
  for (const name of [basename(file), file]) for (const k of schemaKinds) if (name.includes(k)) return k;
  try {
    const guessed = guessKind(JSON.parse(text));
    if (guessed) return guessed;
  } catch {
    // not JSON: the validation below reports it
  }
  throw new UsageError(`cannot tell which schema ${file} follows; pass --kind ${schemaKinds.join('|')}`);
}

/** A manifest gets the same checks as AddImage: the schema, then what the schema cannot say (order, parents, limits). */
async function manifestIssues(text: Buffer): Promise<ValidationIssue[]> {
  const { InvalidManifestError, parseManifest } = await import('../manifest/load.js');
  try {
    parseManifest(text);
    return [];
  } catch (err) {
    if (err instanceof InvalidManifestError) return [{ pointer: err.pointer === '(document)' ? '' : err.pointer, message: err.detail }];
    throw err;
  }
}

async function withBroker<T>(busAddress: string | undefined, fn: (b: MountgateBroker) => Promise<T>): Promise<T> {
  const { connect } = await import('../client/broker.js');
  const broker = await connect(busAddress ? { busAddress } : {});
  trace('connected');
  try {
    return await fn(broker);
  } finally {
    broker.close();
  }
}

/** Closes an fd of ours, ignoring one already closed. */
function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}

function openDirectory(path: string): number {
  try {
    return openSync(path, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(code === 'ENOTDIR' ? `${path} is not a directory` : code === 'ENOENT' ? `${path} does not exist` : `cannot open ${path}: ${(err as Error).message}`);
  }
}

/** --image REF[:DST]: DST is an absolute path after the first ":/", default "/". */
function parseImageSpec(value: string): { ref: string; target: string } {
  const at = value.indexOf(':/');
  const ref = at < 0 ? value : value.slice(0, at);
  const target = at < 0 ? '/' : value.slice(at + 1).replace(/(?<=.)\/+$/, '');
  if (ref === '') throw new UsageError(`--image ${value}: name the image before the ":" (an id, id prefix or name)`);
  if (target.split('/').some((n) => n === '..')) throw new UsageError(`--image ${value}: the target must not contain ".."`);
  return { ref, target };
}

const program = new Command('mountgate')
  .description('Idmapped and composefs mounts for rootless containers, through the mountgated broker.')
  .version(packageVersion)
  .enablePositionalOptions()
  .addOption(new Option('--bus-address <address>', 'D-Bus address of the broker (default: $MOUNTGATE_BUS_ADDRESS, else the system bus)').env('MOUNTGATE_BUS_ADDRESS'))
  .addHelpText(
    'after',
    `
Exit codes:
  0 success              4 denied by the policy      7 not found
  1 internal error       5 not owned by you          8 broker unavailable
  2 usage error          6 a limit was exceeded      9 not supported here
  3 invalid request

Examples:
  mountgate validate request.json                 check a request, manifest or policy
  mountgate explain request.json --source ~/src   what the broker would do, and why
  mountgate run --bind ~/src:/src:owner=1000 -- ls -ln /src
  mountgate run -it --bind ~/src:/src -- bash`,
  );

const busOf = () => program.opts<{ busAddress?: string }>().busAddress;

program
  .command('validate')
  .description('check a manifest, bind/mount request or policy file against its JSON Schema')
  .argument('<file>', 'the file, or - for standard input')
  .addOption(new Option('--kind <kind>', 'which schema (guessed from the name or shape otherwise)').choices([...schemaKinds]))
  .option('--json', 'print {file, kind, valid, issues} as JSON')
  .addHelpText('after', '\nEvery problem is printed as "FILE: POINTER: what to change"; exit 0 when valid, 3 when not.\n\nExample:\n  mountgate validate --kind bind-request my-request.json')
  .action(async (file: string, opts: { kind?: string; json?: boolean }) => {
    const { formatIssues, guessKind, parseAndValidate } = await import('../schema/validate.js');
    const bytes = readInput(file);
    const text = bytes.toString('utf8');
    const kind = kindOf(file, text, guessKind, opts.kind);
    const checked = kind === 'manifest' ? undefined : parseAndValidate(kind, text);
    const issues = checked ? (checked.ok ? [] : checked.issues) : await manifestIssues(bytes);
    const result = { ok: issues.length === 0 };
    if (opts.json) say(JSON.stringify({ file, kind, valid: result.ok, issues }));
    else if (result.ok) say(`${file}: valid ${kind}`);
    else for (const line of formatIssues(issues)) say(`${file}: ${line}`);
    process.exitCode = result.ok ? 0 : exitCodes.InvalidRequest;
  });

program
  .command('explain')
  .description("print the broker's verdict and plan for a request, without performing it")
  .argument('<request>', 'request JSON file, or - for standard input')
  .option('--method <name>', 'the broker method the request is for', 'BindIdmapped')
  .option('--source <dir>', 'for BindIdmapped: the directory you would bind')
  .option('--json', 'print the verdict as JSON')
  .addHelpText('after', '\nOne line per check ("ok" or "FAIL"), then the plan of mount steps when allowed.\nExit 0 when the request would be allowed, the code of the refusal otherwise.\n\nExample:\n  echo {} | mountgate explain - --source ~/src')
  .action(async (file: string, opts: { method: string; source?: string; json?: boolean }) => {
    const text = readInput(file).toString('utf8');
    let request: unknown;
    try {
      request = JSON.parse(text);
    } catch (err) {
      throw new MountgateError('InvalidRequest', `${file} is not valid JSON: ${(err as Error).message}`);
    }
    const fds = opts.source ? [openDirectory(opts.source)] : [];
    try {
      const verdict = await withBroker(busOf(), (b) => b.explain(opts.method, request, fds));
      if (opts.json) say(JSON.stringify(verdict));
      else {
        say(`${verdict.method}: ${verdict.allowed ? 'would be allowed' : 'would be denied'}`);
        for (const c of verdict.checks) say(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.message}`);
        for (const line of verdict.plan?.text ?? []) say(`  plan ${line}`);
      }
      if (!verdict.allowed) {
        const reason = verdict.error?.name.split('.').pop() as keyof typeof exitCodes | undefined;
        process.exitCode = reason && reason in exitCodes ? exitCodes[reason] : exitCodes.PolicyDenied;
      }
    } finally {
      fds.forEach(closeQuietly);
    }
  });

program
  .command('info')
  .description('show the broker version and the kernel features it detected')
  .option('--json', 'print as JSON')
  .action(async (opts: { json?: boolean }) => {
    const info = await withBroker(busOf(), (b) => b.getInfo());
    if (opts.json) say(JSON.stringify(info));
    else for (const [k, v] of Object.entries(info)) say(`${k}: ${String(v)}`);
  });

program
  .command('run')
  .description('run a command in a new user+mount namespace of yours, with idmapped binds from the broker')
  .argument('[command...]', 'the command and its arguments (after --); with an imported container image at /, default: what its config says (Entrypoint and Cmd)')
  .option('--bind <SRC:DST[:OPTS]>', 'bind a directory you own at DST; OPTS: ro, noexec, owner=N, uid=N, gid=N (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
  .option('--image <REF[:DST]>', 'mount one of your images (id, id prefix or name) at DST, default / (the command runs in it) (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
  .option('--writable', 'put a writable overlay over the images: writes go to a scratch directory removed at exit')
  .option('-i, --interactive', 'keep standard input open (with -t: an interactive terminal)')
  .option('-t, --tty', 'run the command on a pseudo-terminal')
  .option('--cwd <dir>', 'working directory inside the namespace')
  .option('--dry-run', "print the broker's verdict and plan for every bind and image, mount nothing, run nothing")
  .passThroughOptions()
  .addHelpText(
    'after',
    `
Your namespace maps id 0 to you and 1.. to your /etc/subuid and /etc/subgid
ranges. A bind without owner= keeps ids as they are on the host (your files
appear as root inside); owner=1000 makes your files appear as uid/gid 1000
inside, and files that uid 1000 creates land on disk as yours.

An image (see \`mountgate image add\`) shows its ids the same way: its id 0 is
you. Mounted at / it becomes the command's root, with the host's /dev, /proc
and /sys and a fresh /tmp; --bind targets are then paths inside the image and
must be directories that exist in it (or lie under /tmp), unless --writable.

An image imported from a container archive (\`image add docker-archive:...\`,
\`oci:...\`, \`podman:...\`) and mounted at / runs as podman would run it: its
Entrypoint, then the command given (or else its Cmd), in its WorkingDir, with
its Env, as its User: the config its import kept under the image's name in
$XDG_DATA_HOME/mountgate/images/names.

Examples:
  mountgate run --image app                       what the image's config says
  mountgate run --bind ~/project:/src:owner=1000 -- ls -ln /src
  mountgate run -it --bind ~/project:/src -- bash
  mountgate run --image tools --bind ~/project:/mnt -- make -C /mnt
  mountgate run --image tools:/opt/tools -- /opt/tools/bin/lint
  mountgate run --image tools --writable -- sh -c 'echo changed > /etc/motd'`,
  )
  .action(async (command: string[], opts: { bind: string[]; image: string[]; writable?: boolean; interactive?: boolean; tty?: boolean; cwd?: string; dryRun?: boolean }) => {
    const uid = process.getuid!();
    const account = lookupAccount(uid);
    if (!account) throw new UsageError(`uid ${uid} has no entry in /etc/passwd`);
    if (account.subuids.length === 0 || account.subgids.length === 0) {
      throw new MountgateError('PolicyDenied', `user ${account.name} has no range in /etc/subuid or /etc/subgid; ask the administrator for one`);
    }
    const uidNs = namespaceMap(uid, account.subuids);
    const gidNs = namespaceMap(account.gid, account.subgids);
    const specs = opts.bind.map(parseBindSpec);
    const imageSpecs = opts.image.map(parseImageSpec);
    if (imageSpecs.filter((i) => i.target === '/').length > 1) throw new UsageError('only one --image can be mounted at /');
    if (opts.writable && imageSpecs.length === 0) throw new UsageError('--writable applies to images: add --image REF');
    const mounts: NamespaceMounts[] = [];
    const images: ImageMounts[] = [];
    let rootImage: { id: string; name?: string } | undefined;
    if (command.length === 0 && !imageSpecs.some((i) => i.target === '/')) throw new UsageError('give the command to run after --');
    const bindRequest = (spec: ReturnType<typeof parseBindSpec>): BindRequest => ({
      uidMap: spec.uid === undefined ? identityMap(controlledIds(uid, account.subuids)) : ownerMap(uid, account.subuids, uidNs, spec.uid),
      gidMap: spec.gid === undefined ? identityMap(controlledIds(account.gid, account.subgids)) : ownerMap(account.gid, account.subgids, gidNs, spec.gid),
      ...(spec.readOnly ? { readOnly: true } : {}),
      ...(spec.noexec ? { noexec: true } : {}),
    });
    if (opts.dryRun) {
      // Exactly what the broker's decide/plan would say; nothing is mounted.
      let denial: string | undefined;
      await withBroker(busOf(), async (broker) => {
        const listing = imageSpecs.length > 0 ? await broker.listImages() : [];
        const show = (what: string, v: Awaited<ReturnType<typeof broker.explain>>) => {
          if (!v.allowed) denial ??= v.error?.name.split('.').pop() ?? 'PolicyDenied';
          say(`${what}: ${v.allowed ? 'would be allowed' : 'would be denied'}`);
          for (const c of v.checks) say(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.message}`);
          for (const line of v.plan?.text ?? []) say(`  plan ${line}`);
        };
        for (const spec of imageSpecs) show(`--image ${spec.ref}`, await broker.explain('MountImage', { imageId: resolveImageRef(listing, spec.ref).id, request: {} }));
        for (const spec of specs) {
          const dir = openDirectory(resolve(spec.source));
          try {
            show(`--bind ${spec.source}:${spec.target}`, await broker.explain('BindIdmapped', bindRequest(spec), [dir]));
          } finally {
            closeSync(dir);
          }
        }
      });
      say(`namespace: uid_map ${uidNs.map((r) => `${r.from}->${r.to}x${r.count}`).join(' ')}; then: ${command.join(' ')}`);
      process.exitCode = denial === undefined ? 0 : (exitCodes[denial as keyof typeof exitCodes] ?? exitCodes.PolicyDenied);
      return;
    }
    try {
      await withBroker(busOf(), async (broker) => {
        const listing = imageSpecs.length > 0 ? await broker.listImages() : [];
        for (const spec of imageSpecs) {
          const found = resolveImageRef(listing, spec.ref);
          const { id } = found;
          if (spec.target === '/') rootImage = found;
          const { mountFd } = await broker.mountImage(id, {});
          images.push({ fd: mountFd, target: spec.target, writable: Boolean(opts.writable) });
        }
        for (const spec of specs) {
          const dir = openDirectory(resolve(spec.source));
          try {
            const { mountFd } = await broker.bindIdmapped(dir, bindRequest(spec));
            mounts.push({ fd: mountFd, target: spec.target });
          } finally {
            closeSync(dir);
          }
        }
      });
    } catch (err) {
      [...mounts, ...images].forEach((m) => closeQuietly(m.fd));
      throw err;
    }
    trace('mounts received');
    const asConfigured = await configuredRun(rootImage, command);
    const { runInNamespace } = await import('../client/namespace.js');
    process.exitCode = await runInNamespace({
      uidMap: uidNs,
      gidMap: gidNs,
      mounts,
      images,
      command: asConfigured.command,
      interactive: Boolean(opts.interactive && opts.tty),
      ...(opts.cwd ?? asConfigured.cwd ? { cwd: opts.cwd ?? asConfigured.cwd } : {}),
      ...(asConfigured.env ? { env: asConfigured.env } : {}),
      ...(asConfigured.user ? { user: asConfigured.user } : {}),
    });
  });

/**
 * What `run` runs in an image at /: an image imported from a container
 * archive keeps its config under its name (src/import/sidecar.ts), and, as podman
 * does, its Entrypoint comes first, then the command given or else its Cmd,
 * in its WorkingDir, with its Env, as its User.
 */
async function configuredRun(image: { id: string; name?: string } | undefined, command: string[]): Promise<{ command: string[]; cwd?: string; env?: Record<string, string>; user?: string }> {
  const config = image ? (await import('../import/sidecar.js')).readSidecar(image)?.sidecar.config : undefined;
  if (!config) {
    if (command.length === 0) throw new UsageError('give the command to run after --: the image has no config saying what to run (only images imported from a container archive have one)');
    return { command };
  }
  const argv = [...(config.Entrypoint ?? []), ...(command.length > 0 ? command : (config.Cmd ?? []))];
  if (argv.length === 0) throw new UsageError('give the command to run after --: the image\'s config names no Entrypoint or Cmd');
  const env: Record<string, string> = {};
  for (const kv of config.Env ?? []) {
    const at = kv.indexOf('=');
    if (at > 0) env[kv.slice(0, at)] = kv.slice(at + 1);
  }
  // What podman gives a container whose image sets none of these.
  env.PATH ??= '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
  if (process.env.TERM) env.TERM ??= process.env.TERM;
  const user = config.User && config.User !== 'root' && config.User !== '0' ? config.User : undefined;
  if (!user) env.HOME ??= '/root';
  return { command: argv, ...(config.WorkingDir ? { cwd: config.WorkingDir } : {}), env, ...(user ? { user } : {}) };
}

/** The subcommand named on the command line, after the program's own options. */
function subcommandOf(argv: string[]): string | undefined {
  for (let k = 2; k < argv.length; k++) {
    const arg = argv[k]!;
    if (arg === '--bus-address') k++;
    else if (!arg.startsWith('-')) return arg;
  }
  return undefined;
}

/** The commands defined in this file; any other word (or none: help) needs the optional ones too. */
const coreCommands = new Set(program.commands.map((c) => c.name()));
const needsOptional = (argv: string[]) => {
  const command = subcommandOf(argv);
  return command === undefined ? !argv.some((a) => a === '-V' || a === '--version') : !coreCommands.has(command);
};

async function registerOptional(): Promise<void> {
  // Commands that live in their own modules (manifest and image tools), each
  // imported by a literal name, so the architecture test can follow it.
  for (const load of [() => import('./manifest.js'), () => import('./image.js'), () => import('./image-store.js'), () => import('./export-layer.js'), () => import('./attach.js'), () => import('./toolbox.js')]) {
    try {
      const m = (await load()) as { register?: (p: Command) => void };
      m.register?.(program);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw err;
    }
  }
}

function report(err: unknown): number {
  if (err instanceof MountgateError || err instanceof BrokerUnavailableError) {
    process.stderr.write(`mountgate: ${err.message}\n`);
    return err.exitCode;
  }
  if (err instanceof UsageError) {
    process.stderr.write(`mountgate: ${err.message}\n`);
    return exitCodes.Usage;
  }
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'ENOENT' && e.path) {
    process.stderr.write(`mountgate: ${e.path} does not exist\n`);
    return exitCodes.Usage;
  }
  process.stderr.write(`mountgate: ${(e as Error)?.message ?? String(err)}\n`);
  return exitCodes.Internal;
}

if (needsOptional(process.argv)) await registerOptional();
try {
  await program.parseAsync(process.argv);
} catch (err) {
  process.exitCode = report(err);
}
trace('done');
