// The .deb of this tree, built once per test run and shared by the files that
// need it (test/packaging/deb.test.ts, test/systemd/installed.test.ts): the
// build compiles the native addons from source (better-sqlite3 alone takes
// minutes on 2 cores), so two files building it each would double that. The
// first caller builds under a lock (flock(1)); a later or concurrent one
// waits for it and takes the same package. The directory is the run's
// (MOUNTGATE_TEST_RUN), under /tmp/mountgate-deb-*, and test/run.sh removes it.
import { execFile } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './paths.js';

export interface BuiltDeb {
  code: number;
  /** What build-deb.sh printed: the path of the package. */
  stdout: string;
  stderr: string;
  /** The directory holding mountgate_VERSION_ARCH.deb. */
  dir: string;
  /** The package's path, when the build succeeded. */
  deb?: string;
}

export function debDir(): string {
  const run = (process.env.MOUNTGATE_TEST_RUN ?? String(process.pid)).replace(/[^0-9a-zA-Z]/g, '-');
  return `/tmp/mountgate-deb-${run}`;
}

export function builtDeb(timeoutMs = 20 * 60_000): Promise<BuiltDeb> {
  const dir = debDir();
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  // What build-deb.sh printed (the package's path) is kept, so every caller sees it.
  const script = '[ -f "$1/built" ] || { "$2" --no-build --out "$1" > "$1/printed" && touch "$1/built"; }; cat "$1/printed"';
  return new Promise((resolve) => {
    execFile('flock', [join(dir, '.lock'), 'sh', '-c', script, 'sh', dir, join(repoRoot, 'packaging', 'build-deb.sh')],
      { cwd: repoRoot, maxBuffer: 64 << 20, timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
        const version = (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;
        const deb = readdirSync(dir).find((n) => n.startsWith(`mountgate_${version}_`) && n.endsWith('.deb'));
        resolve({ code, stdout: String(stdout), stderr: String(stderr), dir, ...(deb && statSync(join(dir, 'built'), { throwIfNoEntry: false }) ? { deb: join(dir, deb) } : {}) });
      });
  });
}
