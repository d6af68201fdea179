// Driving test/helpers/objects-client.mjs (a small bus client that adds,
// uploads, lists and removes images of synthetic objects) as a test user,
// and waiting for a broker process the test killed.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pkgRoot } from './paths.js';
import { runAs } from './run-as.js';
import type { TestUser } from './users.js';
import type { World } from './world.js';

const client = join(pkgRoot, 'test', 'helpers', 'objects-client.mjs');

/** Runs objects-client.mjs as `user` on the world's bus; its JSON answer, or an error with its stderr. */
export async function objectsClient(world: World, user: TestUser, args: string[], timeoutMs: number): Promise<Record<string, unknown>> {
  const r = await runAs(user, [process.execPath, client, ...args], { busAddress: world.bus.address, env: { MOUNTGATE_TEST_PKG: pkgRoot }, timeoutMs });
  if (r.code !== 0) throw new Error(`objects-client ${args.join(' ')} failed (${r.code ?? r.signal}): ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

/** Resolves once process `pid` has exited, a zombie or reaped (polled: it is not our child). */
export async function waitGone(pid: number): Promise<void> {
  const state = () => {
    try {
      return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0];
    } catch {
      return undefined;
    }
  };
  for (let s = state(); s !== undefined && s !== 'Z'; s = state()) await new Promise((r) => setTimeout(r, 20));
}
