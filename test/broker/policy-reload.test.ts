// The policy file: validated at start (a bad one stops the broker from
// starting) and on SIGHUP (a bad one is refused, its errors logged, and the
// last good policy stays in force).
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, type World } from '../helpers/world.js';
import { startBroker } from '../helpers/broker.js';
import { runAs } from '../helpers/run-as.js';
import { pkgRoot } from '../helpers/paths.js';
import type { TestUser } from '../helpers/users.js';

const probe = join(pkgRoot, 'test', 'helpers', 'probe-client.mjs');
let world: World;
t.before(async () => {
  world = await createWorld({
    users: { alice: {}, bob: {} },
    policy: (u) => ({ version: 1, methods: { BindIdmapped: { users: [u.alice!.name] } } }),
  });
});
t.teardown(() => world?.teardown());

async function bind(user: TestUser): Promise<{ ok: boolean; name?: string; message?: string }> {
  const r = await runAs(user, [process.execPath, probe, JSON.stringify([{ op: 'bind', source: { kind: 'dir', path: world.dirs[user === world.users.alice ? 'alice' : 'bob'] } }])], { busAddress: world.bus.address });
  return JSON.parse(r.stdout.trim()) as { ok: boolean };
}

async function reload(): Promise<Record<string, unknown>> {
  const seen = world.broker.audit.length;
  world.broker.process.kill('SIGHUP');
  return world.broker.waitFor((l) => l.event === 'policy' && world.broker.audit.indexOf(l) >= seen);
}

t.test('SIGHUP applies a new valid policy', async (tt) => {
  tt.ok((await bind(world.users.alice!)).ok, 'alice may bind under the first policy');
  tt.equal((await bind(world.users.bob!)).name, 'org.mountgate.Error.PolicyDenied', 'bob may not');
  writeFileSync(world.broker.policyPath, JSON.stringify({ version: 1, methods: { BindIdmapped: { users: [world.users.bob!.name] } } }));
  const line = await reload();
  tt.equal(line.allowed, true);
  tt.match(String(line.message), /policy reloaded/);
  tt.ok((await bind(world.users.bob!)).ok, 'bob may bind now');
  const denied = await bind(world.users.alice!);
  tt.equal(denied.name, 'org.mountgate.Error.PolicyDenied', 'alice may not any more');
  tt.match(denied.message, /may not call BindIdmapped/);
});

t.test('SIGHUP with a bad file keeps the last good policy and logs why', async (tt) => {
  writeFileSync(world.broker.policyPath, JSON.stringify({ version: 1, methods: { BindIdmapped: { users: ['*'] } }, colour: 'blue' }));
  const line = await reload();
  tt.equal(line.allowed, false, 'the file is refused');
  tt.match(String(line.message), /unknown field "colour".*keeping the last good policy/);
  tt.ok((await bind(world.users.bob!)).ok, 'bob still may (last good policy)');
  tt.equal((await bind(world.users.alice!)).name, 'org.mountgate.Error.PolicyDenied', 'alice still may not: "*" never took effect');
});

t.test('the broker refuses to start with an invalid policy file', async (tt) => {
  await tt.rejects(startBroker(world.bus.address, '{"version": 2}'), /refusing to start: the policy file .* is invalid/);
});
