// Samplers of the broker's whole process tree (a front and a root executor,
// and any helpers they fork): open fds, resident memory, mounts.
import { readdirSync, readFileSync } from 'node:fs';

/** The pid and every descendant of it, from /proc/<pid>/stat's ppid field. */
export function treePids(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(name));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const todo = [root];
  while (todo.length > 0) {
    const pid = todo.pop()!;
    out.push(pid);
    todo.push(...(children.get(pid) ?? []));
  }
  return out;
}

function countFds(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

/** Open fds summed over the broker's process tree. */
export function treeFds(root: number): number {
  return treePids(root).reduce((n, pid) => n + countFds(pid), 0);
}

/** Resident set size in bytes summed over the tree (VmRSS). */
export function treeRss(root: number): number {
  let total = 0;
  for (const pid of treePids(root)) {
    try {
      const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) total += Number(m[1]) * 1024;
    } catch {
      // exited meanwhile
    }
  }
  return total;
}

/** Samples the tree's RSS every intervalMs until stop(); reports the peak. */
export function rssSampler(root: number, intervalMs = 100): { stop(): { peak: number; samples: number } } {
  let peak = treeRss(root);
  let samples = 1;
  const timer = setInterval(() => {
    peak = Math.max(peak, treeRss(root));
    samples += 1;
  }, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      return { peak, samples };
    },
  };
}

/** Waits (up to timeoutMs) until the tree's fd count is at most `baseline`; returns the last count. */
export async function fdsBackTo(root: number, baseline: number, timeoutMs = 5000): Promise<number> {
  const end = Date.now() + timeoutMs;
  let now = treeFds(root);
  while (now > baseline && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 100));
    now = treeFds(root);
  }
  return now;
}

/** Erofs and overlay mounts in the broker's mount namespace (one line of mountinfo each). */
export function imageMounts(pid: number): string[] {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/mountinfo`, 'utf8');
  } catch {
    return ['(the broker is gone)'];
  }
  return text
    .split('\n')
    .filter((l) => / - (erofs|overlay) /.test(l));
}
