// scratch: per-kind PSS of a broker at rest
import { setTimeout as sleep } from 'node:timers/promises';
import { createWorld } from '../test/helpers/world.js';
import { showTreeMemory, treeMemory, treeUniqueResident } from '../test/adversarial/helpers/broker-tree.js';
const world = await createWorld({ users: { bench: {} } });
try {
  await sleep(Number(process.argv[2] ?? 3000));
  console.log(showTreeMemory(treeMemory(world.broker.pid)));
  console.log(`unique resident ${(treeUniqueResident(world.broker.pid) / 2 ** 20).toFixed(1)} MiB`);
  if (process.env.HOLD) await sleep(Number(process.env.HOLD));
} finally {
  await world.teardown();
}
