// The bench suite's result shape and report, pure: verdicts computed from a
// target's limit, result files checked for the shape, plots with their axes.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { median, readResults, row, shapeProblems, writeResult } from '../../bench/lib/results.js';
import { plotSvg, tickLabel } from '../../bench/lib/plot.js';
import { report } from '../../bench/report.js';

t.test('a row passes by its ratio, or by its own figure, against the limit in its direction', async (tt) => {
  const ratio = { limit: 3, unit: 'ratio' };
  tt.match(row(ratio, 'a', 30, 10), { ratio: 3, pass: true });
  tt.match(row(ratio, 'b', 31, 10), { pass: false });
  tt.match(row(ratio, 'c', 31, null), { reference: null, ratio: null, pass: false }, 'no reference is never a pass');
  tt.match(row({ limit: 0.8, unit: 'ratio', direction: 'at-least' }, 'd', 90, 100), { pass: true });
  tt.match(row({ limit: 0.8, unit: 'ratio', direction: 'at-least' }, 'e', 70, 100), { pass: false });
  tt.match(row({ limit: 100, unit: 'MiB' }, 'f', 70, null), { ratio: null, pass: true }, 'a bound on the figure itself needs no reference');
  tt.equal(median([3, 1, 2]), 2);
  tt.equal(median([4, 1, 2, 3]), 2.5);
});

t.test('result files are written and read in the shape, and files without it are named', async (tt) => {
  const dir = mkdtempSync(join(tmpdir(), 'mountgate-results.'));
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const target = { target: 'x at most 3x y', limit: 3, unit: 'ratio', rows: [row({ limit: 3, unit: 'ratio' }, 'case', 2, 1)] };
  writeResult({ bench: 'demo', targets: [target], series: [{ title: 'T', x: 'entries', y: 'ms', lines: [{ name: 'mountgate', points: [[1, 2]] }] }] }, dir);
  writeFileSync(join(dir, 'broken.json'), JSON.stringify({ bench: 'broken', date: 'yesterday', targets: [{ target: 'x', limit: 'three', unit: 'ratio', rows: [] }], series: [] }));
  const { results, problems } = readResults(dir);
  tt.same(results.map((r) => r.bench), ['demo']);
  tt.equal(problems.length, 1);
  tt.match(problems[0], /^broken\.json: date: an ISO date; targets\[0\]: target, limit and unit$/);
  tt.throws(() => writeResult({ bench: 'Bad Name', targets: [], series: [] }, dir), /bench: a lower-case name/);
  tt.same(shapeProblems({ bench: 'ok', date: new Date().toISOString(), targets: [], series: [{ title: 't', x: 'x', y: 'y', lines: [{ name: 'n', points: [[1]] }] }] }), ['series[0]: each line a name and [x, y] points']);
});

t.test('the report has a table per target and a plot per series', async (tt) => {
  const date = '2026-01-02T03:04:05.000Z';
  const target = { target: 'run at most 3x mount', limit: 3, unit: 'ratio', rows: [row({ limit: 3, unit: 'ratio' }, 'run, ms', 90, 20), row({ limit: 3, unit: 'ratio' }, 'no ref, ms', 50, null)] };
  const series = { title: 'Mount time against entries', x: 'entries', y: 'ms', lines: [{ name: 'mountgate', points: [[1000, 2], [1e6, 3]] as [number, number][] }, { name: 'reference', points: [[1000, 1], [1e6, 1]] as [number, number][] }] };
  const { markdown, plots } = report([{ bench: 'startup', date, targets: [target], series: [series] }], [], (bench) => (bench === 'startup' ? 'Notes on startup.' : undefined));
  tt.match(markdown, '| run, ms | 90.0 | 20.0 | 4.50x | **fail** |');
  tt.match(markdown, '| no ref, ms | 50.0 | — | — | no reference (skipped) |');
  tt.match(markdown, '| run at most 3x mount | startup | ≤ 3x | 0 of 1 (1 without reference) |');
  tt.match(markdown, '![Mount time against entries](bench/plots/startup-mount-time-against-entries.svg)');
  tt.same([...plots.keys()], ['startup-mount-time-against-entries.svg']);
  tt.match(markdown, /\| no reference \(skipped\) \|\n\nNotes on startup\./, "a bench's notes follow its table");
});

t.test('a plot has its title, axis labels with a log scale across decades, ticks and a legend', async (tt) => {
  const svg = plotSvg({ title: 'Mount <time>', x: 'entries', y: 'ms', lines: [{ name: 'mountgate', points: [[1000, 2], [100000, 3], [1e6, 2.5]] }, { name: 'reference', points: [[1000, 1], [1e6, 1.2]] }] });
  tt.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  tt.match(svg, 'Mount &lt;time&gt;', 'text is escaped');
  tt.match(svg, 'entries (log scale)', 'three decades of x: logarithmic');
  tt.notMatch(svg, 'ms (log scale)', 'y spans less than two decades: linear');
  for (const label of ['>1000<', '>10k<', '>100k<', '>1M<']) tt.match(svg, label, `an x tick ${label}`);
  tt.match(svg, '>mountgate</text>');
  tt.match(svg, '>reference</text>');
  tt.match(svg, 'stroke-dasharray', 'the reference is dashed');
  tt.equal(tickLabel(2_500_000), '2.5M');
  tt.equal(tickLabel(0.25), '0.25');
});
