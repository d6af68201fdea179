// Samplers of the broker's whole process tree (a front and a root executor,
// and any helpers they fork): open fds, resident memory, mounts.
import { closeSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';

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

/** Which part of the broker a process is, from its command line: the script it runs (executor, front, prober, upload helper, build helper) or its program name. */
export function processKind(pid: number): string {
  let argv: string[];
  try {
    argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return '(gone)';
  }
  const script = argv.find((a) => /\.m?js$|\/mountgated$/.test(a));
  const names: Record<string, string> = { mountgated: 'executor', 'main.js': 'executor', 'front.js': 'front', 'probe-helper.js': 'prober', 'upload-helper.js': 'upload helper', 'build-helper.js': 'build helper' };
  if (script) return names[script.slice(script.lastIndexOf('/') + 1)] ?? script.slice(script.lastIndexOf('/') + 1);
  return (argv[0] ?? '?').slice((argv[0] ?? '').lastIndexOf('/') + 1);
}

export interface KindMemory {
  kind: string;
  processes: number;
  /** Summed VmRSS, bytes: a page shared by two processes counts twice. */
  rss: number;
  /** Summed Pss (smaps_rollup), bytes: a page shared by N processes counts 1/N in each, so the sum counts it once. */
  pss: number;
}

function rollup(pid: number): { rss: number; pss: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
    return { rss: field('Rss'), pss: field('Pss') };
  } catch {
    return undefined; // exited meanwhile (or a kernel thread)
  }
}

/** RSS and PSS of the broker's tree, summed and per kind of process (processKind). */
export function treeMemory(root: number): { rss: number; pss: number; kinds: KindMemory[] } {
  const kinds = new Map<string, KindMemory>();
  let rss = 0;
  let pss = 0;
  for (const pid of treePids(root)) {
    const m = rollup(pid);
    if (!m) continue;
    const kind = processKind(pid);
    const k = kinds.get(kind) ?? { kind, processes: 0, rss: 0, pss: 0 };
    k.processes += 1;
    k.rss += m.rss;
    k.pss += m.pss;
    kinds.set(kind, k);
    rss += m.rss;
    pss += m.pss;
  }
  return { rss, pss, kinds: [...kinds.values()].sort((a, b) => b.pss - a.pss) };
}

/**
 * Bytes of the distinct physical pages resident in the tree's processes
 * (root only: /proc/PID/pagemap's frame numbers): every page counted once,
 * whoever else maps it. PSS divides a page shared with processes outside the
 * tree (other Node programs on the machine share node's text) among them
 * too; this does not, so it is what the tree holds resident, shared pages once.
 */
export function treeUniqueResident(root: number): number {
  const frames = new Set<number>();
  for (const pid of treePids(root)) {
    let smaps: string;
    let fd: number;
    try {
      smaps = readFileSync(`/proc/${pid}/smaps`, 'utf8');
      fd = openSync(`/proc/${pid}/pagemap`, 'r');
    } catch {
      continue; // exited meanwhile
    }
    try {
      // Only the mappings with resident pages: V8 reserves gigabytes it never touches.
      const ranges = [...smaps.matchAll(/^([0-9a-f]+)-([0-9a-f]+) [^\n]*\n(?:(?![0-9a-f]+-)[^\n]*\n)*?Rss:\s+(\d+) kB/gm)];
      for (const m of ranges) {
        if (m[3] === '0') continue;
        const start = parseInt(m[1]!, 16) / 4096;
        const pages = (parseInt(m[2]!, 16) - parseInt(m[1]!, 16)) / 4096;
        const buf = Buffer.alloc(pages * 8);
        const got = readSync(fd, buf, 0, buf.length, start * 8);
        for (let k = 0; k + 8 <= got; k += 8) {
          const hi = buf.readUInt32LE(k + 4);
          if ((hi & 0x80000000) === 0) continue; // not present
          frames.add((hi & 0x7fffff) * 2 ** 32 + buf.readUInt32LE(k));
        }
      }
    } catch {
      // exited meanwhile
    } finally {
      closeSync(fd);
    }
  }
  return frames.size * 4096;
}

/** One line per kind: "front 1× 61.2 MiB PSS (70.3 RSS), ...". */
export function showTreeMemory(m: { rss: number; pss: number; kinds: KindMemory[] }): string {
  const MiB = 2 ** 20;
  const parts = m.kinds.map((k) => `${k.kind} ${k.processes}× ${(k.pss / MiB).toFixed(1)} PSS (${(k.rss / MiB).toFixed(1)} RSS)`);
  return `PSS ${(m.pss / MiB).toFixed(1)} MiB, RSS ${(m.rss / MiB).toFixed(1)} MiB: ${parts.join(', ')}`;
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
