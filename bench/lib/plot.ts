// A line plot of a result series as a standalone SVG: axes with ticks and
// labels, a title, a legend, one line with markers per series line. An axis
// whose values span two decades or more is logarithmic. Pure: data in, text out.
import type { Series } from './results.js';

const width = 640;
const height = 400;
const margin = { left: 78, right: 24, top: 44, bottom: 58 };
const colors = ['#1f5fbf', '#d1495b', '#2e8b57', '#8a5cc2', '#e08a1e', '#555555'];
const markers = ['circle', 'square', 'diamond', 'triangle', 'circle', 'square'] as const;

interface Axis {
  log: boolean;
  min: number;
  max: number;
  ticks: number[];
  /** Data value -> pixel offset from the axis origin, 0..length. */
  scale(v: number): number;
}

const escape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** 1, 2.5, 10k, 1.5M: short labels for ticks. */
export function tickLabel(v: number): string {
  const abs = Math.abs(v);
  const trim = (x: number) => String(Number(x.toPrecision(3)));
  if (abs >= 1e9) return `${trim(v / 1e9)}G`;
  if (abs >= 1e6) return `${trim(v / 1e6)}M`;
  if (abs >= 1e4) return `${trim(v / 1e3)}k`;
  return trim(v);
}

/** Linear ticks at 1, 2 or 5 times a power of ten, about `count` of them, covering [min, max]. */
function linearTicks(min: number, max: number, count = 6): number[] {
  if (min === max) return [min];
  const raw = (max - min) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) ?? 10 * power;
  const ticks: number[] = [];
  const last = Math.ceil(max / step - 1e-9) * step;
  for (let t = Math.floor(min / step) * step; t <= last + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

function axis(values: number[], length: number, invert: boolean, fromZero: boolean): Axis {
  const positive = values.filter((v) => v > 0);
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const log = positive.length === values.length && positive.length > 0 && hi / lo >= 100;
  let min: number;
  let max: number;
  let ticks: number[];
  if (log) {
    min = 10 ** Math.floor(Math.log10(lo));
    max = 10 ** Math.ceil(Math.log10(hi));
    if (max === min) max = min * 10;
    ticks = [];
    const decades = Math.round(Math.log10(max / min));
    for (let p = Math.log10(min); p <= Math.log10(max) + 1e-9; p++) {
      ticks.push(10 ** p);
      if (decades <= 2 && p < Math.log10(max) - 1e-9) ticks.push(2 * 10 ** p, 5 * 10 ** p);
    }
    ticks.sort((a, b) => a - b);
  } else {
    const span = hi - lo || Math.abs(hi) || 1;
    ticks = linearTicks(fromZero ? Math.min(0, lo) : lo - span * 0.05, hi + span * 0.05);
    min = ticks[0]!;
    max = ticks.at(-1)!;
    if (max === min) max = min + 1;
  }
  const unit = (v: number) => (log ? (Math.log10(v) - Math.log10(min)) / (Math.log10(max) - Math.log10(min)) : (v - min) / (max - min));
  return { log, min, max, ticks, scale: (v) => (invert ? (1 - unit(v)) * length : unit(v) * length) };
}

function marker(kind: (typeof markers)[number], x: number, y: number, color: string): string {
  const r = 4;
  switch (kind) {
    case 'square':
      return `<rect x="${(x - r).toFixed(1)}" y="${(y - r).toFixed(1)}" width="${2 * r}" height="${2 * r}" fill="${color}"/>`;
    case 'diamond':
      return `<path d="M${x.toFixed(1)} ${(y - r - 1).toFixed(1)}l${r + 1} ${r + 1}l${-r - 1} ${r + 1}l${-r - 1} ${-r - 1}z" fill="${color}"/>`;
    case 'triangle':
      return `<path d="M${x.toFixed(1)} ${(y - r - 1).toFixed(1)}l${r + 1} ${2 * r}h${-2 * r - 2}z" fill="${color}"/>`;
    default:
      return `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="${r}" fill="${color}"/>`;
  }
}

/** The series as an SVG document. */
export function plotSvg(series: Series, subtitle?: string): string {
  const lines = series.lines.filter((l) => l.points.length > 0);
  const points = lines.flatMap((l) => l.points);
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${escape(series.title)}</text>`,
  ];
  if (subtitle) out.push(`<text x="${width / 2}" y="36" text-anchor="middle" font-size="11" fill="#555555">${escape(subtitle)}</text>`);
  if (points.length === 0) {
    out.push(`<text x="${width / 2}" y="${height / 2}" text-anchor="middle" fill="#555555">no points</text>`, '</svg>');
    return `${out.join('\n')}\n`;
  }
  const x = axis(points.map((p) => p[0]), plotW, false, false);
  const y = axis(points.map((p) => p[1]), plotH, true, true);
  const px = (v: number) => margin.left + x.scale(v);
  const py = (v: number) => margin.top + y.scale(v);
  // Grid and ticks.
  for (const t of x.ticks) {
    const at = px(t).toFixed(1);
    out.push(`<line x1="${at}" y1="${margin.top}" x2="${at}" y2="${margin.top + plotH}" stroke="#e4e4e4"/>`);
    out.push(`<line x1="${at}" y1="${margin.top + plotH}" x2="${at}" y2="${margin.top + plotH + 5}" stroke="#333333"/>`);
    out.push(`<text x="${at}" y="${margin.top + plotH + 18}" text-anchor="middle">${tickLabel(t)}</text>`);
  }
  for (const t of y.ticks) {
    const at = py(t).toFixed(1);
    out.push(`<line x1="${margin.left}" y1="${at}" x2="${margin.left + plotW}" y2="${at}" stroke="#e4e4e4"/>`);
    out.push(`<line x1="${margin.left - 5}" y1="${at}" x2="${margin.left}" y2="${at}" stroke="#333333"/>`);
    out.push(`<text x="${margin.left - 8}" y="${(Number(at) + 4).toFixed(1)}" text-anchor="end">${tickLabel(t)}</text>`);
  }
  out.push(`<rect x="${margin.left}" y="${margin.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#333333"/>`);
  // Axis labels.
  out.push(`<text x="${margin.left + plotW / 2}" y="${height - 14}" text-anchor="middle">${escape(series.x)}${x.log ? ' (log scale)' : ''}</text>`);
  out.push(`<text transform="translate(18 ${margin.top + plotH / 2}) rotate(-90)" text-anchor="middle">${escape(series.y)}${y.log ? ' (log scale)' : ''}</text>`);
  // Lines.
  lines.forEach((line, k) => {
    const color = colors[k % colors.length]!;
    const sorted = [...line.points].sort((a, b) => a[0] - b[0]);
    const d = sorted.map(([a, b], j) => `${j === 0 ? 'M' : 'L'}${px(a).toFixed(1)} ${py(b).toFixed(1)}`).join(' ');
    out.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2"${line.name === 'reference' ? ' stroke-dasharray="6 4"' : ''}/>`);
    for (const [a, b] of sorted) out.push(marker(markers[k % markers.length]!, px(a), py(b), color));
  });
  // Legend, in the corner of the plot that the lines cross least.
  const legendW = 16 + Math.max(...lines.map((l) => l.name.length)) * 7 + 30;
  const legendH = lines.length * 18 + 8;
  const samples = lines.flatMap((line) => {
    const sorted = [...line.points].sort((a, b) => a[0] - b[0]).map(([a, b]) => [px(a), py(b)] as const);
    return sorted.flatMap((p, j) => (j === 0 ? [p] : Array.from({ length: 20 }, (_, t) => [sorted[j - 1]![0] + ((p[0] - sorted[j - 1]![0]) * (t + 1)) / 20, sorted[j - 1]![1] + ((p[1] - sorted[j - 1]![1]) * (t + 1)) / 20] as const)));
  });
  const corners = [
    [margin.left + 10, margin.top + 10],
    [margin.left + plotW - 10 - legendW, margin.top + 10],
    [margin.left + 10, margin.top + plotH - 10 - legendH],
    [margin.left + plotW - 10 - legendW, margin.top + plotH - 10 - legendH],
  ] as const;
  const crossing = (c: readonly [number, number]) => samples.filter(([a, b]) => a >= c[0] - 6 && a <= c[0] + legendW + 6 && b >= c[1] - 6 && b <= c[1] + legendH + 6).length;
  const [bx, by] = corners.reduce((best, c) => (crossing(c) < crossing(best) ? c : best));
  out.push(`<rect x="${bx}" y="${by}" width="${legendW}" height="${legendH}" fill="#ffffff" fill-opacity="0.9" stroke="#999999"/>`);
  lines.forEach((line, k) => {
    const color = colors[k % colors.length]!;
    const ly = by + 14 + k * 18;
    const lx = bx + 8;
    out.push(`<line x1="${lx}" y1="${ly - 4}" x2="${lx + 24}" y2="${ly - 4}" stroke="${color}" stroke-width="2"${line.name === 'reference' ? ' stroke-dasharray="6 4"' : ''}/>`);
    out.push(marker(markers[k % markers.length]!, lx + 12, ly - 4, color));
    out.push(`<text x="${lx + 32}" y="${ly}">${escape(line.name)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
