// How long a process's event loop was held up, for its stop line: the delay
// histogram (perf_hooks) and the worst stalls with the time they happened,
// to line them up with what the callers did.
import { monitorEventLoopDelay } from 'node:perf_hooks';

/** Stalls shorter than this are not listed one by one (the histogram has them). */
const stallMs = 100;

export interface LoopReport {
  eventLoopDelayMs: { p50: number; p99: number; max: number };
  /** The five worst stalls: when they ended (ISO time, and the monotonic clock in µs, as a --cpu-prof profile counts it). */
  stalls: { at: string; ms: number; mono: number }[];
}

export function watchEventLoop(): () => LoopReport {
  const lag = monitorEventLoopDelay({ resolution: 20 });
  lag.enable();
  const stalls: LoopReport['stalls'] = [];
  let tick = performance.now();
  setInterval(() => {
    const now = performance.now();
    const late = now - tick - 20;
    tick = now;
    if (late < stallMs) return;
    stalls.push({ at: new Date().toISOString(), ms: Math.round(late), mono: Number(process.hrtime.bigint() / 1000n) });
    stalls.sort((a, b) => b.ms - a.ms).splice(5);
  }, 20).unref();
  return () => ({ eventLoopDelayMs: { p50: lag.percentile(50) / 1e6, p99: lag.percentile(99) / 1e6, max: lag.max / 1e6 }, stalls: [...stalls] });
}
