// What the tests of real archives of the debootstrap tree do with an image,
// as a real user through a real broker: run the CLI, list the mounted image
// through the kernel (test/helpers/tree-listing.mjs inside `mountgate run`),
// and hash what `image export-layer` writes.
import { createHash } from 'node:crypto';
import { createReadStream, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { World } from '../helpers/world.js';
import type { TestUser } from '../helpers/users.js';
import { runAs, type RunResult } from '../helpers/run-as.js';
import { cliPath } from '../helpers/paths.js';
import { listingScript, type Listed } from '../helpers/tree-listing.js';

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
    if (r.code !== 0) return { error: `run --image ${image} exited ${r.code}: ${r.stderr.trim()}` };
    return { listing: JSON.parse(r.stdout) as Listed[] };
  }

  /** `image export-layer IMAGE N` into a file of the user's: its sha256 ("sha256:..."), or the error. */
  async exportedDigest(image: string, n: number): Promise<{ digest?: string; error?: string }> {
    const out = join(this.dir, `export-${n}.tar`);
    try {
      const r = await this.as(['mountgate', 'image', 'export-layer', image, String(n)], { out });
      if (r.code !== 0) return { error: `export-layer ${image} ${n} exited ${r.code}: ${r.stderr.trim()}` };
      return { digest: `sha256:${await sha256File(out)}` };
    } finally {
      rmSync(out, { force: true });
    }
  }
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(c as Buffer);
  return h.digest('hex');
}
