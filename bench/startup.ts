// `mountgate run --image X -- true` as a whole process, from an unprivileged
// user, against composefs' own tools in the same run: `mount.composefs` of an
// image mkcomposefs made from the same tree, then `umount`, each timed as a
// process (issue 8: at most 3x). The two are interleaved, run by run, so both
// see the same machine. For context it also times `node -e 0` (the floor of
// any Node program) and `mountgate --version` (the client's own start).
// With --compare CLI, another build's bin/mountgate (e.g. an earlier commit's)
// runs the same command interleaved with them: before and after, same load.
//   sudo bash bench/run.sh startup [--runs 20] [--compare /path/to/bin/mountgate]
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld } from '../test/helpers/world.js';
import { cliPath } from '../test/helpers/paths.js';
import { installPrograms } from '../test/helpers/programs.js';
import type { TestUser } from '../test/helpers/users.js';
import { median, row, writeResult, type ResultTarget } from './lib/results.js';
import { referenceTools } from './lib/reference.js';

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : dflt;
};
const runs = Number(arg('--runs', '20'));
const compare = arg('--compare', '');

/** Runs a program to its end; resolves with its wall time in ms. Fails on a non-zero exit. */
async function timed(argv: string[], opts: { user?: TestUser; env?: Record<string, string> } = {}): Promise<number> {
  return (await run(argv, opts)).ms;
}

function run(argv: string[], opts: { user?: TestUser; env?: Record<string, string> } = {}): Promise<{ ms: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(argv[0]!, argv.slice(1), {
      ...(opts.user ? { uid: opts.user.uid, gid: opts.user.gid } : {}),
      cwd: '/',
      env: { PATH: '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin', LANG: 'C.UTF-8', ...(opts.user ? { HOME: '/nonexistent', USER: opts.user.name } : {}), ...opts.env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('close', (code, signal) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (code === 0) resolve({ ms, stderr });
      else reject(new Error(`${argv.join(' ')} exited ${code ?? signal}: ${stderr.trim()}`));
    });
  });
}

/** A tree that can run `true` as its root: the program, its libraries, and the usual mount points. */
function buildTree(dir: string, user: TestUser): void {
  for (const d of ['dev', 'proc', 'sys', 'tmp', 'etc']) mkdirSync(join(dir, d), { recursive: true });
  installPrograms(dir, ['/usr/bin/true']);
  execFileSync('chown', ['-R', `${user.uid}:${user.gid}`, dir]);
}

const all = { users: ['*'] };
const world = await createWorld({
  users: { bench: {} },
  policy: { version: 1, methods: { AddImage: all, PutObjects: all, MountImage: all, ListImages: all, RemoveImage: all }, limits: { concurrentRequests: 8, requestsPerMinute: 1_000_000 } },
});
const scratch = mkdtempSync('/var/tmp/mountgate-startup.');
try {
  const user = world.users.bench!;
  const bus = { MOUNTGATE_BUS_ADDRESS: world.bus.address };
  const tree = join(world.dirs.bench!, 'tree');
  buildTree(tree, user);
  await timed([process.execPath, cliPath, 'image', 'add', tree, '--name', 'startup'], { user, env: bus });
  const mountgateRun = [process.execPath, cliPath, 'run', '--image', 'startup', '--', 'true'];

  const tools = referenceTools(['mkcomposefs', 'mount.composefs']);
  let reference: (() => Promise<number>) | undefined;
  if ('paths' in tools) {
    const objects = join(scratch, 'objects');
    const image = join(scratch, 'image.cfs');
    const mnt = join(scratch, 'mnt');
    mkdirSync(objects);
    mkdirSync(mnt);
    execFileSync(tools.paths.mkcomposefs, [`--digest-store=${objects}`, tree, image]);
    reference = async () => (await timed([tools.paths['mount.composefs'], '-o', `basedir=${objects}`, image, mnt])) + (await timed(['umount', mnt]));
  } else {
    console.log(tools.missing);
  }

  const samples = { run: [] as number[], reference: [] as number[], node: [] as number[], version: [] as number[], compare: [] as number[] };
  const compareRun = [process.execPath, compare, ...mountgateRun.slice(2)];
  for (let k = 0; k < 2; k++) {
    await timed(mountgateRun, { user, env: bus });
    await reference?.();
  }
  for (let k = 0; k < runs; k++) {
    samples.run.push(await timed(mountgateRun, { user, env: bus }));
    if (reference) samples.reference.push(await reference());
    samples.node.push(await timed([process.execPath, '-e', '0'], { user }));
    samples.version.push(await timed([process.execPath, cliPath, '--version'], { user }));
    if (compare) samples.compare.push(await timed(compareRun, { user, env: bus }));
  }

  const fmt = (xs: number[]) => (xs.length ? `${median(xs).toFixed(1).padStart(8)} ms  (${Math.min(...xs).toFixed(1)}-${Math.max(...xs).toFixed(1)})` : '       -');
  console.log(`whole processes, median (min-max) of ${runs}, interleaved`);
  console.log(`mountgate run --image X -- true    ${fmt(samples.run)}`);
  console.log(`mount.composefs + umount           ${fmt(samples.reference)}`);
  console.log(`node -e 0                          ${fmt(samples.node)}`);
  console.log(`mountgate --version                ${fmt(samples.version)}`);
  if (compare) console.log(`${compare} run ... (compared)\n                                   ${fmt(samples.compare)}`);

  // One more run with the client's start-up marks: where its time goes.
  const traced = await run(mountgateRun, { user, env: { ...bus, MOUNTGATE_TRACE_STARTUP: '1' } });
  console.log(`\none run with MOUNTGATE_TRACE_STARTUP=1 (${traced.ms.toFixed(1)} ms in all, marks in ms since its start):`);
  for (const line of traced.stderr.split('\n').filter((l) => l.includes('trace'))) console.log(`  ${line.replace('mountgate: trace ', '')}`);

  const target: ResultTarget = {
    target: '`mountgate run --image X -- true` as a whole process: at most 3x `mount.composefs` + `umount` as a process',
    limit: 3,
    unit: 'ratio',
    rows: [],
  };
  const ref = samples.reference.length ? median(samples.reference) : null;
  target.rows.push(row(target, 'run --image (6-file image at /) -- true, ms', median(samples.run), ref));
  const r = target.rows[0]!;
  console.log(r.ratio === null ? 'ratio: no reference' : `ratio ${r.ratio.toFixed(2)} (limit ${target.limit}): ${r.pass ? 'pass' : 'FAIL'}`);
  console.log(`wrote ${writeResult({ bench: 'startup', targets: [target], series: [] })}`);
} finally {
  rmSync(scratch, { recursive: true, force: true });
  await world.teardown();
}
