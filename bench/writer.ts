// The composefs writer against mkcomposefs 1.0.8, side by side in one run, as
// whole processes (what a user runs, fixed costs included):
//   mkcomposefs --from-file X.dump out          (the reference)
//   mountgate image build --from-dump X.dump    (dump -> image)
//   mountgate image build X.json                (manifest -> image)
// on a dump of this machine's /usr (made once with mkcomposefs and
// composefs-info, cached), prefixes of it of 1k..60k entries (a dump lists a
// directory before its contents, so every prefix is a tree), and the
// cs9-x86_64-minimal conformance asset (22,010 entries). Per case and tool:
// the median wall time of N runs and the median peak RSS (/usr/bin/time %M),
// and the ratio to mkcomposefs in the same run. Every image mountgate writes
// is compared byte for byte with the one mkcomposefs wrote. Also, in the same
// interleaved runs, two floors: node with mountgate's flags doing nothing
// (`node -e 0`), and node loading the build path's modules and exiting, so
// that what part of a gap is Node's own fixed cost can be read off the rows.
// And the fixed costs of a mountgate process: bare node, the imports on the build path.
// mountgate runs as a user runs it: the program bin/mountgate itself (its
// #! line, node and its flags, found on PATH), not `node bin/mountgate`.
// Writes bench/results/writer.json.
// Run: bash bench/run.sh writer [--runs N] [--sizes 1000,10000,...] [--cli path/to/bin/mountgate] [--out NAME.json | /abs/path.json]
// Needs mkcomposefs and composefs-info on PATH or under $MOUNTGATE_REF_COMPOSEFS/bin.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { median, shapeProblems } from './lib/results.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** --cli PATH times another build of mountgate (a checkout of main, say) with the same cases. */
const cliIndex = process.argv.indexOf('--cli');
const cli = cliIndex >= 0 ? resolve(process.argv[cliIndex + 1]!) : join(root, 'bin/mountgate');
const cs9Asset = resolve(root, '../shared/conformance/composefs-assets/cs9-x86_64-minimal.dump.gz');
const cacheDir = process.env.MOUNTGATE_BENCH_CACHE ?? '/var/cache/mountgate-bench';

function argument(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}
const runs = Number(argument('--runs', '5'));
const sizes = argument('--sizes', '1000,10000,22000,60000').split(',').map(Number);

function findTool(name: string): string | undefined {
  const dirs = [...(process.env.MOUNTGATE_REF_COMPOSEFS ? [join(process.env.MOUNTGATE_REF_COMPOSEFS, 'bin')] : []), ...(process.env.PATH ?? '').split(delimiter)];
  for (const d of dirs) if (d && existsSync(join(d, name))) return join(d, name);
  return undefined;
}
const mkcomposefs = findTool('mkcomposefs');
const composefsInfo = findTool('composefs-info');

const work = mkdtempSync(join(tmpdir(), 'mountgate-bench-writer-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

interface Measured {
  seconds: number;
  rssMiB: number;
  sha256: string;
}

/** One run of a command: wall time around the process, its peak RSS, the sha256 of what it wrote. */
function runOnce(argv: string[], output: string): Measured {
  const rssFile = join(work, 'rss');
  const t0 = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%M', '-o', rssFile, ...argv], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed: ${r.stderr.toString()}`);
  const rssMiB = Number(readFileSync(rssFile, 'utf8').trim().split('\n').pop()) / 1024;
  const sha256 = output ? createHash('sha256').update(readFileSync(output)).digest('hex') : '';
  return { seconds, rssMiB, sha256 };
}

/** The node flags of bin/mountgate's #! line ("#!/usr/bin/env -S node --flag ..."), which the floors run with too. */
const nodeFlags = readFileSync(cli, 'utf8').split('\n')[0]!.replace(/^#!.*?\bnode\b/, '').trim().split(/\s+/).filter(Boolean);
const buildModule = join(dirname(cli), '../dist/src/cli/build.js');
/** What a process costs before it reads its input: node itself, then node and the build path's modules. */
const floors: Record<string, string[]> = {
  nodeFloor: [process.execPath, ...nodeFlags, '-e', '0'],
  loadFloor: [process.execPath, ...nodeFlags, '--input-type=module', '-e', `await import(${JSON.stringify(buildModule)})`],
};

/**
 * N runs of each tool, interleaved so that the machine's noise falls on all
 * of them alike; a tool writes the file it is given, a floor writes nothing.
 */
function measure(tools: Record<string, (out: string) => string[]>, extra: Record<string, string[]> = {}): Record<string, { seconds: number; rssMiB: number; sha256: string }> {
  const samples: Record<string, Measured[]> = {};
  for (let i = 0; i < runs; i++) {
    for (const [name, argv] of Object.entries(tools)) {
      const out = join(work, `${name}.cfs`);
      (samples[name] ??= []).push(runOnce(argv(out), out));
    }
    for (const [name, argv] of Object.entries(extra)) (samples[name] ??= []).push(runOnce(argv, ''));
  }
  const result: Record<string, { seconds: number; rssMiB: number; sha256: string }> = {};
  for (const [name, s] of Object.entries(samples)) {
    result[name] = { seconds: median(s.map((m) => m.seconds)), rssMiB: median(s.map((m) => m.rssMiB)), sha256: s[0]!.sha256 };
  }
  return result;
}

/** A dump of /usr, made once: mkcomposefs computes the digests, composefs-info prints the dump. */
function usrDump(): Buffer {
  const cached = join(cacheDir, 'usr.dump');
  if (!existsSync(cached)) {
    mkdirSync(cacheDir, { recursive: true });
    console.log(`making ${cached} from /usr (once; reads every file)...`);
    const image = join(work, 'usr-source.cfs');
    execFileSync(mkcomposefs!, ['/usr', image], { stdio: 'inherit' });
    writeFileSync(cached + '.tmp', execFileSync(composefsInfo!, ['dump', image], { maxBuffer: 1 << 30 }));
    execFileSync('mv', [cached + '.tmp', cached]);
  }
  return readFileSync(cached);
}

/** The first `n` lines of a dump. */
function prefix(dump: Buffer, n: number): Buffer {
  let at = 0;
  for (let i = 0; i < n && at < dump.length; i++) at = dump.indexOf(0x0a, at) + 1 || dump.length;
  return dump.subarray(0, at);
}

function lines(dump: Buffer): number {
  let n = 0;
  for (let i = dump.indexOf(0x0a); i >= 0; i = dump.indexOf(0x0a, i + 1)) n++;
  return n;
}

interface CaseResult {
  name: string;
  entries: number;
  reference: { seconds: number; rssMiB: number } | null;
  fromDump: { seconds: number; rssMiB: number };
  fromManifest: { seconds: number; rssMiB: number };
  /** `node -e 0` and node loading the build modules, with bin/mountgate's flags, in the same runs. */
  nodeFloor: { seconds: number; rssMiB: number };
  loadFloor: { seconds: number; rssMiB: number };
  identical: boolean | null;
  /** The load average (1 minute) before and after the case's runs. */
  load: [number, number];
}

function runCase(name: string, dump: Buffer): CaseResult {
  const dumpFile = join(work, `${name}.dump`);
  const manifestFile = join(work, `${name}.json`);
  writeFileSync(dumpFile, dump);
  execFileSync(process.execPath, [cli, 'manifest', 'from-dump', dumpFile, '-o', manifestFile], { env: { ...process.env, NODE_OPTIONS: '' } });
  const tools: Record<string, (out: string) => string[]> = {
    fromDump: (out) => [cli, 'image', 'build', '--from-dump', dumpFile, '-o', out],
    fromManifest: (out) => [cli, 'image', 'build', manifestFile, '-o', out],
  };
  if (mkcomposefs) tools.reference = (out) => [mkcomposefs, '--from-file', dumpFile, out];
  const loadBefore = loadAverage();
  const m = measure(tools, floors);
  const identical = m.reference ? m.fromDump!.sha256 === m.reference.sha256 && m.fromManifest!.sha256 === m.reference.sha256 : null;
  const r: CaseResult = {
    name, entries: lines(dump), reference: m.reference ?? null, fromDump: m.fromDump!, fromManifest: m.fromManifest!,
    nodeFloor: m.nodeFloor!, loadFloor: m.loadFloor!, identical, load: [loadBefore, loadAverage()],
  };
  const show = (x: { seconds: number; rssMiB: number }, ref: { seconds: number; rssMiB: number } | null) =>
    `${x.seconds.toFixed(3)} s ${x.rssMiB.toFixed(0)} MiB` + (ref ? ` (${(x.seconds / ref.seconds).toFixed(2)}x, ${(x.rssMiB / ref.rssMiB).toFixed(2)}x)` : '');
  console.log(`${name}: ${r.entries.toLocaleString('en-US')} entries`);
  if (r.reference) console.log(`  mkcomposefs --from-file  ${show(r.reference, null)}`);
  console.log(`  dump -> image            ${show(r.fromDump, r.reference)}`);
  console.log(`  manifest -> image        ${show(r.fromManifest, r.reference)}`);
  console.log(`  floor: node -e 0         ${show(r.nodeFloor, r.reference)}`);
  console.log(`  floor: build modules     ${show(r.loadFloor, r.reference)}`);
  console.log(`  load average ${r.load[0].toFixed(2)} before, ${r.load[1].toFixed(2)} after`);
  console.log(`  images identical to mkcomposefs's: ${identical ?? 'not compared (no mkcomposefs)'}`);
  if (identical === false) process.exitCode = 1;
  return r;
}

function loadAverage(): number {
  return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
}

/** Where a mountgate process's fixed time goes: node itself, then the imports of the build path. */
function fixedCosts(): Record<string, number> {
  const script = (body: string) => [process.execPath, '--input-type=module', '-e', body];
  const dist = join(root, 'dist/src');
  const imports = ['composefs/format.js', 'composefs/writer.js', 'composefs/convert.js', 'manifest/load.js'];
  const costs: Record<string, number[]> = { 'node -e 0': [], 'mountgate --version': [] };
  for (let i = 0; i < runs; i++) {
    costs['node -e 0']!.push(runOnce(script('0'), '').seconds);
    costs['mountgate --version']!.push(runOnce([cli, '--version'], '').seconds);
    for (const mod of imports) {
      const body = `await import(${JSON.stringify(join(dist, mod))});`;
      (costs[`import ${mod}`] ??= []).push(runOnce(script(body), '').seconds);
    }
  }
  return Object.fromEntries(Object.entries(costs).map(([k, v]) => [k, median(v)]));
}

if (!mkcomposefs || !composefsInfo) {
  console.log('mkcomposefs or composefs-info not found (PATH, $MOUNTGATE_REF_COMPOSEFS/bin): no /usr dump and no comparison; timing mountgate on the cs9 asset only');
}
const cases: CaseResult[] = [];
const usr = mkcomposefs && composefsInfo ? usrDump() : null;
if (usr) for (const n of sizes) cases.push(runCase(`usr-${n}`, prefix(usr, n)));
cases.push(runCase('cs9-minimal', gunzipSync(readFileSync(cs9Asset))));
if (usr) cases.push(runCase('usr', usr));
const fixed = fixedCosts();
console.log('fixed costs (median wall time of a process):');
for (const [k, v] of Object.entries(fixed)) console.log(`  ${k.padEnd(32)} ${(v * 1000).toFixed(0)} ms`);

type Row = { case: string; mountgate: number; reference: number; ratio: number; pass: boolean };
function rows(c: CaseResult | undefined, label: string, what: 'seconds' | 'rssMiB', limit: number): Row[] {
  if (!c?.reference) return [];
  const unit = what === 'seconds' ? 'time' : 'peak RSS';
  return ([['dump → image', c.fromDump], ['manifest → image', c.fromManifest]] as const).map(([path, x]) => {
    const ratio = x[what] / c.reference![what];
    return { case: `${label} ${path}, ${unit}${loadNote(c)}`, mountgate: x[what], reference: c.reference![what], ratio: Number(ratio.toFixed(3)), pass: ratio <= limit && c.identical === true };
  });
}
/**
 * The load average around a case's runs, in its rows' names: on this shared
 * 2-core machine a load far above 2 shrinks the ratios (single-threaded
 * mkcomposefs seems to lose more to it than node with its GC and compiler
 * threads: /usr dump -> image 0.88x at load 13-15 against ~1.5x at load 3).
 */
function loadNote(c: CaseResult): string {
  return ` (load ${c.load[0].toFixed(1)}–${c.load[1].toFixed(1)})`;
}

/** The floors of a case, as rows: time against the 1.0x limit, peak RSS against 1.5x. */
function floorRows(c: CaseResult | undefined, label: string): Row[] {
  if (!c?.reference) return [];
  return ([['node -e 0', c.nodeFloor], ['node + the build modules', c.loadFloor]] as const).flatMap(([what, x]) =>
    (['seconds', 'rssMiB'] as const).map((unit) => {
      const ratio = x[unit] / c.reference![unit];
      const limit = unit === 'seconds' ? 1.0 : 1.5;
      return { case: `${label} floor: ${what}, ${unit === 'seconds' ? 'time' : `peak RSS (limit ${limit}x)`}${loadNote(c)}`, mountgate: x[unit], reference: c.reference![unit], ratio: Number(ratio.toFixed(3)), pass: ratio <= limit };
    }),
  );
}
const usrCase = cases.find((c) => c.name === 'usr');
const cs9Case = cases.find((c) => c.name === 'cs9-minimal');
const usrLabel = usrCase ? `/usr (${usrCase.entries.toLocaleString('en-US')} entries)` : '/usr';
const targets = [
  { target: 'Writer: dump → image and manifest → image at most 1.0x mkcomposefs on the Debian /usr class of input', limit: 1.0, unit: 'ratio', rows: rows(usrCase, usrLabel, 'seconds', 1.0) },
  { target: 'Writer: peak memory at most 1.5x mkcomposefs on the Debian /usr class of input', limit: 1.5, unit: 'ratio', rows: rows(usrCase, usrLabel, 'rssMiB', 1.5) },
  { target: 'Writer: the same at 22k entries (fixed costs count): time at most 1.0x', limit: 1.0, unit: 'ratio', rows: rows(cs9Case, 'cs9-minimal (22,010 entries)', 'seconds', 1.0) },
  { target: 'Writer: the same at 22k entries: peak memory at most 1.5x', limit: 1.5, unit: 'ratio', rows: rows(cs9Case, 'cs9-minimal (22,010 entries)', 'rssMiB', 1.5) },
  {
    target: "Writer at 22k entries, the floors (not mountgate's work; for reading the rows above): node with mountgate's flags doing nothing, and loading the build modules, against mkcomposefs in the same runs",
    limit: 1.0,
    unit: 'ratio',
    rows: floorRows(cs9Case, 'cs9-minimal (22,010 entries)'),
  },
];
const usrSeries = cases.filter((c) => c.name.startsWith('usr')).sort((a, b) => a.entries - b.entries);
const line = (name: string, pick: (c: CaseResult) => number | undefined) => ({
  name,
  points: usrSeries.flatMap((c) => (pick(c) === undefined ? [] : [[c.entries, Number(pick(c)!.toFixed(4))]])),
});
const series = [
  {
    title: 'Writer time against entries',
    x: 'entries',
    y: 's',
    lines: [line('mountgate dump → image', (c) => c.fromDump.seconds), line('mountgate manifest → image', (c) => c.fromManifest.seconds), line('mkcomposefs', (c) => c.reference?.seconds)],
  },
  {
    title: 'Writer peak memory against entries',
    x: 'entries',
    y: 'MiB',
    lines: [line('mountgate dump → image', (c) => c.fromDump.rssMiB), line('mountgate manifest → image', (c) => c.fromManifest.rssMiB), line('mkcomposefs', (c) => c.reference?.rssMiB)],
  },
];
const results = join(root, 'bench/results');
mkdirSync(results, { recursive: true });
const result = { bench: 'writer', date: new Date().toISOString(), runs, targets, series, fixedCosts: fixed, cases };
const problems = shapeProblems(result);
if (problems.length > 0) throw new Error(`the writer's result does not have the shape: ${problems.join('; ')}`);
// --out NAME.json lands in bench/results; an absolute path (a run not to be reported) where it says.
const out = resolve(results, argument('--out', 'writer.json'));
writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
console.log(`wrote ${out}`);
