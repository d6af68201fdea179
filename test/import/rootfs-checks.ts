// What the tests of real archives of the debootstrap tree do with an image,
// as a real user through a real broker: run the CLI, list the mounted image
// through the kernel (test/helpers/tree-listing.mjs inside `mountgate run`),
// and hash what `image export-layer` writes.
import { createHash } from 'node:crypto';
import { createReadStream, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, type World } from '../helpers/world.js';
import type { TestUser } from '../helpers/users.js';
import { runAs, type RunResult } from '../helpers/run-as.js';
import { cliPath } from '../helpers/paths.js';
import { debootstrapRoot, type Rootfs } from '../helpers/rootfs.js';
import { listTree, listingScript, type Listed } from '../helpers/tree-listing.js';

export interface RootfsWorld {
  world: World;
  rootfs: Rootfs;
  /** The debootstrap tree as root lists it. */
  source: Listed[];
}

/** A world with one user, alice, who may add, mount, list and remove images; and the run's debootstrap tree. */
export async function rootfsWorld(): Promise<RootfsWorld> {
  const [world, rootfs] = await Promise.all([
    createWorld({
      users: { alice: {} },
      policy: {
        version: 1,
        methods: Object.fromEntries(['AddImage', 'PutObjects', 'ProveObjects', 'MountImage', 'ListImages', 'RemoveImage'].map((m) => [m, { users: ['*'] }])),
        limits: { concurrentRequests: 4, requestsPerMinute: 100000 },
      },
    }),
    debootstrapRoot(),
  ]);
  try {
    return { world, rootfs, source: await listTree(rootfs.tree) };
  } catch (err) {
    await world.teardown();
    throw err;
  }
}

export class ImageChecks {
  /** `dir`: the user's own directory (the working directory, and where exports go). */
  constructor(private readonly world: World, readonly user: TestUser, readonly dir: string, readonly env: Record<string, string>) {}

  /** A program as the user (argv[0] "mountgate": the CLI under test), in the user's directory; stdout to `out` when given. */
  as(argv: string[], opts: { out?: string; timeoutMs?: number } = {}): Promise<RunResult> {
    const full = argv[0] === 'mountgate' ? [process.execPath, cliPath, ...argv.slice(1)] : argv;
    const cmd = opts.out ? ['sh', '-c', 'exec "$@" > "$0"', opts.out, ...full] : full;
    return runAs(this.user, cmd, { busAddress: this.world.bus.address, cwd: this.dir, env: this.env, timeoutMs: opts.timeoutMs ?? 300_000 });
  }

  /** The mounted image, listed through the kernel by the user (at /mnt in `mountgate run`'s namespace). */
  async list(image: string): Promise<{ listing?: Listed[]; error?: string }> {
    const r = await this.as(['mountgate', 'run', '--image', `${image}:/mnt`, '--', process.execPath, listingScript, '/mnt']);
    if (r.code !== 0) return { error: `run --image ${image}${failure(r)}` };
    return { listing: JSON.parse(r.stdout) as Listed[] };
  }

  /** `image export-layer IMAGE N` into a file of the user's: its sha256 ("sha256:..."), or the error. */
  async exportedDigest(image: string, n: number): Promise<{ digest?: string; error?: string }> {
    const out = join(this.dir, `export-${n}.tar`);
    try {
      const r = await this.as(['mountgate', 'image', 'export-layer', image, String(n)], { out });
      if (r.code !== 0) return { error: `export-layer ${image} ${n}${failure(r)}` };
      return { digest: `sha256:${await sha256File(out)}` };
    } finally {
      rmSync(out, { force: true });
    }
  }
}

/** Nothing for a run that exited 0; else how it ended and what it said. */
export const failure = (r: RunResult): string => (r.code === 0 ? '' : `: ${r.code === null ? `killed by ${r.signal}` : `exit ${r.code}`}: ${r.stderr.trim()}`);

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(c as Buffer);
  return h.digest('hex');
}
