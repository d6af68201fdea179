import { join } from 'node:path';
import { createWorld } from '../test/helpers/world.js';
import { runAs } from '../test/helpers/run-as.js';
import { pkgRoot } from '../test/helpers/paths.js';
const all = { users: ['*'] };
const world = await createWorld({ users: { bench: {} }, policy: { version: 1, methods: { AddImage: all, PutObjects: all, MountImage: all, ListImages: all, RemoveImage: all }, limits: { concurrentRequests: 8, requestsPerMinute: 1_000_000 }, images: { maxBytesPerUser: 2 ** 50 } } });
try {
  const r = await runAs(world.users.bench!, [process.execPath, '--max-old-space-size=8192', join(pkgRoot, 'bench', 'mount-client.mjs'), process.argv[2]!, process.argv[3]!, '1', 'keep'], { busAddress: world.bus.address, env: { MOUNTGATE_TEST_PKG: pkgRoot }, timeoutMs: 1_800_000 });
  console.log(r.code, r.stdout.slice(0, 500), r.stderr.slice(0, 1500));
  console.log((world.broker as unknown as { stderr?: () => string }).stderr?.() ?? '');
} finally {
  await world.teardown();
}
