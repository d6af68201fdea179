// Rootless podman (runc) for a test user: what podman 4.3 needs here (issue 10:
// runc, cgroupfs, events in a file) in the user's containers.conf, and a
// runtime directory of its own; undone by stop(), which kills podman's pause
// process (the user's other processes and the home with podman's storage go
// with the world's teardown). Run as root.
import { chownSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunResult } from './run-as.js';
import type { TestUser } from './users.js';

export interface RootlessPodman {
  /** The environment podman needs: HOME and XDG_RUNTIME_DIR. */
  env: { HOME: string; XDG_RUNTIME_DIR: string };
  runtime: string;
  stop(): void;
}

/** Sets up rootless podman for `user` with `home` (a directory the user owns) as its HOME. */
export function rootlessPodman(user: TestUser, home: string): RootlessPodman {
  const runtime = `/run/user/${user.uid}`;
  mkdirSync(runtime, { recursive: true, mode: 0o700 });
  chownSync(runtime, user.uid, user.gid);
  mkdirSync(join(home, '.config', 'containers'), { recursive: true });
  writeFileSync(join(home, '.config', 'containers', 'containers.conf'), '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n');
  for (const p of ['.config', '.config/containers', '.config/containers/containers.conf']) chownSync(join(home, p), user.uid, user.gid);
  return {
    env: { HOME: home, XDG_RUNTIME_DIR: runtime },
    runtime,
    stop() {
      let pause = 0;
      try {
        pause = Number(readFileSync(join(runtime, 'libpod', 'tmp', 'pause.pid'), 'utf8'));
      } catch {
        // podman never started its pause process
      }
      if (pause > 0) {
        try {
          process.kill(pause, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      rmSync(runtime, { recursive: true, force: true });
    },
  };
}

/** podman's stderr without the warning every command prints here. */
export const podmanErrors = (r: RunResult) => r.stderr.split('\n').filter((l) => l && !/is not a shared mount/.test(l)).join('\n');
