// Start-up marks for measuring where a process's time goes: with
// MOUNTGATE_TRACE_STARTUP=1, each mark prints the milliseconds since the
// process started and what was reached ("mountgate: trace 41.2 ms connected").
const enabled = process.env.MOUNTGATE_TRACE_STARTUP === '1';

export function trace(what: string): void {
  if (enabled) process.stderr.write(`mountgate: trace ${performance.now().toFixed(1)} ms ${what}\n`);
}
