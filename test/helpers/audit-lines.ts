// The JSON audit lines a broker process (or either half of one) writes on
// stdout, collected as they come, and waits for a line that matches. What is
// not JSON, and stderr, is kept for messages.
import type { ChildProcess } from 'node:child_process';

export interface AuditLines {
  lines: Record<string, unknown>[];
  stderr(): string;
  /** Resolves with the first line (so far or to come) that matches; rejects at the timeout or when the process exits first. */
  waitFor(pred: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
}

export function collectAuditLines(child: ChildProcess, who: string): AuditLines {
  const lines: Record<string, unknown>[] = [];
  const waiters: { pred: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }[] = [];
  let err = '';
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        const rec = JSON.parse(line) as Record<string, unknown>;
        lines.push(rec);
        for (const w of [...waiters]) if (w.pred(rec)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(rec); }
      } catch {
        err += `${line}\n`;
      }
    }
  });
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return {
    lines,
    stderr: () => err,
    waitFor(pred, timeoutMs = 15_000) {
      const found = lines.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${who}: no matching audit line within ${timeoutMs} ms; stderr: ${err}`)), timeoutMs);
        waiters.push({ pred, resolve: (l) => { clearTimeout(timer); resolve(l); } });
        child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${who} exited (${code}): ${err}`)); });
      });
    },
  };
}
