// A whole test world: a private bus with the production bus policy, a real
// broker as root, and real unprivileged users with directories of their own
// in a world-traversable scratch directory. Torn down completely at the end.
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Policy } from '../../src/schema/types.generated.js';
import { startPrivateBus, type PrivateBus } from './bus-config.js';
import { startBroker, type BrokerHandle } from './broker.js';
import { createUser, removeUser, type TestUser } from './users.js';

export interface World {
  bus: PrivateBus;
  broker: BrokerHandle;
  users: Record<string, TestUser>;
  /** A 0755 scratch directory; users[x] owns dirs[x] inside it. */
  scratch: string;
  dirs: Record<string, string>;
  /** Writes a file (mode 0644, owned by `owner` or root) into the scratch dir and returns its path. */
  file(name: string, content: string, owner?: TestUser): string;
  teardown(): Promise<void>;
}

export interface WorldSpec {
  /** name -> options; every user gets a directory of its own. */
  users: Record<string, { subids?: boolean; system?: boolean }>;
  policy?: Policy | ((users: Record<string, TestUser>) => Policy);
  /** dbus-daemon limits of the private bus (the policy is always the production one). */
  busLimits?: Record<string, number>;
  /** Extra mountgated arguments. */
  brokerArgs?: string[];
}

export async function createWorld(spec: WorldSpec): Promise<World> {
  const users: Record<string, TestUser> = {};
  const dirs: Record<string, string> = {};
  const scratch = mkdtempSync('/tmp/mountgate-world.');
  chmodSync(scratch, 0o755);
  let bus: PrivateBus | undefined;
  let broker: BrokerHandle | undefined;
  // A caller may replace world.broker (a restart after a crash): teardown
  // stops whichever broker the world holds at the end, not the first one.
  let world: World | undefined;
  const teardown = async () => {
    await (world?.broker ?? broker)?.stop();
    await bus?.stop();
    for (const u of Object.values(users)) removeUser(u);
    rmSync(scratch, { recursive: true, force: true });
  };
  try {
    for (const [name, opts] of Object.entries(spec.users)) {
      const user = createUser(`mg${name.slice(0, 5)}`, opts);
      users[name] = user;
      const dir = join(scratch, name);
      mkdirSync(dir, { mode: 0o755 });
      chownSync(dir, user.uid, user.gid);
      dirs[name] = dir;
    }
    bus = await startPrivateBus(spec.busLimits ? { limits: spec.busLimits } : {});
    const policy = typeof spec.policy === 'function' ? spec.policy(users) : spec.policy;
    broker = await startBroker(bus.address, policy, undefined, spec.brokerArgs ?? []);
  } catch (err) {
    await teardown();
    throw err;
  }
  world = {
    bus,
    broker,
    users,
    scratch,
    dirs,
    file(name, content, owner) {
      const path = join(scratch, name);
      writeFileSync(path, content, { mode: 0o644 });
      if (owner) chownSync(path, owner.uid, owner.gid);
      return path;
    },
    teardown,
  };
  return world;
}
