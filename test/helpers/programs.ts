// Trees that can run host programs as their root: each program and the
// libraries it loads (per ldd), copied to the same paths inside.
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** Copies host programs and the libraries they load into `root`, at the same paths. */
export function installPrograms(root: string, programs: string[]): void {
  for (const p of programs) {
    const deps = execFileSync('ldd', [p], { encoding: 'utf8' }).match(/\/\S+/g) ?? [];
    for (const file of [p, ...deps]) {
      const dst = join(root, file);
      if (existsSync(dst)) continue;
      mkdirSync(dirname(dst), { recursive: true });
      copyFileSync(file, dst);
      chmodSync(dst, 0o755);
    }
  }
}
