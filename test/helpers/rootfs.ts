// A real root filesystem for the import tests: Debian bookworm made by
// debootstrap (test/helpers/rootfs.sh: minbase, plus xattrs, a file
// capability and owners other than root), and layer tarballs of it made by
// GNU tar. Built once per test run and shared by the files that need it
// (about half a minute: debootstrap fetches ~40 MB of packages from Debian's
// mirror), the way test/helpers/deb.ts shares the .deb: the first caller
// builds under a lock (flock(1)); a later or concurrent one waits for it and
// takes the same tree. The directory is the run's (MOUNTGATE_TEST_RUN), under
// /tmp/mountgate-rootfs-*, and test/run.sh removes it.
import { execFile } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './paths.js';

export type RootfsTar = 'gnu' | 'ustar' | 'posix' | 'posix.gz' | 'posix.zst';

export interface Rootfs {
  /** The root filesystem (root-owned; read it as root). */
  tree: string;
  /** Layer tarballs of the tree (mode 0644 in a 0755 directory: every user can read them). */
  tars: Record<RootfsTar, string>;
  /** The uncompressed archive behind each tarball (the layer's diff ID is its sha256). */
  plain: Record<RootfsTar, string>;
}

export function rootfsDir(): string {
  const run = (process.env.MOUNTGATE_TEST_RUN ?? String(process.pid)).replace(/[^0-9a-zA-Z]/g, '-');
  return `/tmp/mountgate-rootfs-${run}`;
}

/** The run's root filesystem and its tarballs, built by the first caller. */
export function debootstrapRoot(timeoutMs = 15 * 60_000): Promise<Rootfs> {
  const dir = rootfsDir();
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const script = '[ -f "$1/built" ] || { "$2" "$1" && touch "$1/built"; }';
  return new Promise((resolve, reject) => {
    execFile('flock', [join(dir, '.lock'), 'bash', '-c', script, 'bash', dir, join(repoRoot, 'test', 'helpers', 'rootfs.sh')],
      { maxBuffer: 16 << 20, timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
        if (err) return reject(new Error(`the debootstrap root filesystem could not be made: ${String(stderr).trim() || err.message}`));
        const tars = {} as Record<RootfsTar, string>;
        const plain = {} as Record<RootfsTar, string>;
        for (const k of ['gnu', 'ustar', 'posix', 'posix.gz', 'posix.zst'] as RootfsTar[]) {
          tars[k] = join(dir, k.includes('.') ? k.replace('.', '.tar.') : `${k}.tar`);
          plain[k] = join(dir, `${k.split('.')[0]}.tar`);
        }
        resolve({ tree: join(dir, 'tree'), tars, plain });
      });
  });
}
