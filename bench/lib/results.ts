// The one shape every benchmark writes to bench/results/NAME.json and the
// report (bench/report.ts) reads: per target of issue 8, rows of mountgate
// against the reference measured in the same run, and series to plot.
// A row without a reference (the tools are absent) keeps reference and ratio
// null: the report shows the comparison as skipped, never as passed.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface ResultRow {
  case: string;
  /** mountgate's figure, in the target's measure (ms, MiB/s, ...). */
  mountgate: number;
  /** The reference's figure in the same run; null when it was not measured. */
  reference: number | null;
  /** mountgate / reference; null without a reference. */
  ratio: number | null;
  pass: boolean;
}

export interface ResultTarget {
  /** The target's words, as the issue states it. */
  target: string;
  /** The bound the target sets, in `unit`. */
  limit: number;
  /** "ratio" (the limit bounds `ratio`), or the unit of `mountgate` itself ("MiB", ...). */
  unit: string;
  /** Whether the figure must stay at most (the default) or at least the limit. */
  direction?: 'at-most' | 'at-least';
  rows: ResultRow[];
}

export interface SeriesLine {
  name: string;
  points: [number, number][];
}

export interface Series {
  title: string;
  /** Axis labels. */
  x: string;
  y: string;
  lines: SeriesLine[];
}

export interface BenchResult {
  bench: string;
  /** ISO 8601. */
  date: string;
  targets: ResultTarget[];
  series: Series[];
  /** Where the broker's store (and the bench's scratch) lived: bench/run.sh says (MOUNTGATE_BENCH_STORE_FS). */
  storeFs?: string;
}

export const resultsDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'results');

/** A row, its ratio and verdict computed from the target's limit. */
export function row(target: Pick<ResultTarget, 'limit' | 'unit' | 'direction'>, name: string, mountgate: number, reference: number | null): ResultRow {
  const ratio = reference === null || reference === 0 ? null : mountgate / reference;
  const measured = target.unit === 'ratio' ? ratio : mountgate;
  const pass = measured !== null && (target.direction === 'at-least' ? measured >= target.limit : measured <= target.limit);
  return { case: name, mountgate, reference, ratio, pass };
}

/** The median of samples (the mean of the middle two for an even count). */
export function median(samples: number[]): number {
  if (samples.length === 0) throw new Error('median of no samples');
  const s = [...samples].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Writes bench/results/NAME.json (or into `dir`); returns its path. */
export function writeResult(result: Omit<BenchResult, 'date'> & { date?: string }, dir = resultsDir): string {
  const storeFs = result.storeFs ?? process.env.MOUNTGATE_BENCH_STORE_FS;
  const full: BenchResult = { bench: result.bench, date: result.date ?? new Date().toISOString(), targets: result.targets, series: result.series, ...(storeFs ? { storeFs } : {}) };
  const problems = shapeProblems(full);
  if (problems.length > 0) throw new Error(`bench ${result.bench}: result does not have the shape: ${problems.join('; ')}`);
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${result.bench}.json`);
  writeFileSync(path, `${JSON.stringify(full, null, 2)}\n`);
  return path;
}

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isNumOrNull = (v: unknown) => v === null || isNum(v);

/** What is wrong with a parsed result file, one sentence each; empty when it has the shape. */
export function shapeProblems(value: unknown): string[] {
  const out: string[] = [];
  const v = value as Partial<BenchResult> | null;
  if (typeof v !== 'object' || v === null) return ['not an object'];
  if (typeof v.bench !== 'string' || !/^[a-z0-9-]+$/.test(v.bench)) out.push('bench: a lower-case name');
  if (typeof v.date !== 'string' || Number.isNaN(Date.parse(v.date))) out.push('date: an ISO date');
  if (!Array.isArray(v.targets)) out.push('targets: an array');
  for (const [k, t] of (Array.isArray(v.targets) ? v.targets : []).entries()) {
    if (typeof t?.target !== 'string' || !isNum(t.limit) || typeof t.unit !== 'string') out.push(`targets[${k}]: target, limit and unit`);
    if (t?.direction !== undefined && t.direction !== 'at-most' && t.direction !== 'at-least') out.push(`targets[${k}].direction: at-most or at-least`);
    if (!Array.isArray(t?.rows)) out.push(`targets[${k}].rows: an array`);
    for (const [j, r] of (Array.isArray(t?.rows) ? t.rows : []).entries()) {
      if (typeof r?.case !== 'string' || !isNum(r.mountgate) || !isNumOrNull(r.reference) || !isNumOrNull(r.ratio) || typeof r.pass !== 'boolean') {
        out.push(`targets[${k}].rows[${j}]: case, mountgate, reference|null, ratio|null, pass`);
      }
    }
  }
  if (!Array.isArray(v.series)) out.push('series: an array');
  for (const [k, s] of (Array.isArray(v.series) ? v.series : []).entries()) {
    if (typeof s?.title !== 'string' || typeof s.x !== 'string' || typeof s.y !== 'string' || !Array.isArray(s.lines)) out.push(`series[${k}]: title, x, y and lines`);
    for (const line of Array.isArray(s?.lines) ? s.lines : []) {
      if (typeof line?.name !== 'string' || !Array.isArray(line.points) || !line.points.every((p: unknown) => Array.isArray(p) && p.length === 2 && isNum(p[0]) && isNum(p[1]))) {
        out.push(`series[${k}]: each line a name and [x, y] points`);
      }
    }
  }
  return out;
}

/** Every result file in `dir`, by bench name; a file without the shape is reported, not read. */
export function readResults(dir = resultsDir): { results: BenchResult[]; problems: string[] } {
  const results: BenchResult[] = [];
  const problems: string[] = [];
  let files: string[] = [];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
  } catch {
    return { results, problems: [`no results directory ${dir}`] };
  }
  for (const file of files) {
    let value: unknown;
    try {
      value = JSON.parse(readFileSync(join(dir, file), 'utf8'));
    } catch (err) {
      problems.push(`${file}: not JSON (${(err as Error).message})`);
      continue;
    }
    const wrong = shapeProblems(value);
    if (wrong.length > 0) problems.push(`${file}: ${wrong.join('; ')}`);
    else results.push(value as BenchResult);
  }
  return { results, problems };
}
