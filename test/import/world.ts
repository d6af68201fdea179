// What the import tests share: a world whose users may use every image
// method (the policy's images limits as given), and the CLI run as one of
// them with its own data directory (where image add keeps what it keeps
// beside an image), optionally with standard output into a file.
import { join } from 'node:path';
import type { Policy } from '../../src/schema/types.generated.js';
import { cliPath } from '../helpers/paths.js';
import { runAs, type RunResult } from '../helpers/run-as.js';
import { createWorld, type World } from '../helpers/world.js';

export async function importWorld(users: string[], images?: Policy['images']): Promise<World> {
  return createWorld({
    users: Object.fromEntries(users.map((u) => [u, {}])),
    policy: {
      version: 1,
      methods: Object.fromEntries(['AddImage', 'PutObjects', 'MountImage', 'ListImages', 'RemoveImage'].map((m) => [m, { users: ['*'] }])),
      limits: { concurrentRequests: 4, requestsPerMinute: 100000 },
      ...(images ? { images } : {}),
    },
  });
}

/** `mountgate ARGS` as `user` of `world`; with `out`, its standard output goes to that file. */
export function cliAs(world: World, user: string): (args: string[], out?: string) => Promise<RunResult> {
  return (args, out) => {
    const argv = [process.execPath, cliPath, ...args];
    return runAs(world.users[user]!, out ? ['sh', '-c', 'exec "$@" > "$0"', out, ...argv] : argv, { busAddress: world.bus.address, env: dataHome(world, user), timeoutMs: 120_000 });
  };
}

/** The environment that gives `user` its data directory. */
export function dataHome(world: World, user: string): Record<string, string> {
  return { XDG_DATA_HOME: join(world.dirs[user]!, 'data') };
}
