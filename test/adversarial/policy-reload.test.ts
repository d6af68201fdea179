// Finding 6: a policy reload that failed open. Removing the --policy file and
// sending SIGHUP switched to the permissive built-in default. Anything but a
// valid file keeps the last policy: a user it denied stays denied, and the
// reload is audited {event: 'policy', allowed: false}.
import t from 'tap';
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createAdvWorld, errorName, type AdvWorld } from './helpers/adv-world.js';

let world: AdvWorld;
let policyText: string;
t.before(async () => {
  world = await createAdvWorld({
    users: { alice: {}, dave: {} },
    policy: (u) => ({
      version: 1,
      methods: { BindIdmapped: { users: [u.alice!.name] } },
      limits: { concurrentRequests: 8, requestsPerMinute: 100000 },
    }),
  });
  policyText = JSON.stringify({ version: 1, methods: { BindIdmapped: { users: [world.users.alice!.name] } }, limits: { concurrentRequests: 8, requestsPerMinute: 100000 } });
});
t.teardown(() => world?.teardown());

async function reload(): Promise<Record<string, unknown>> {
  const seen = world.broker.audit.length;
  world.broker.process.kill('SIGHUP');
  return world.broker.waitFor((l) => l.event === 'policy' && world.broker.audit.indexOf(l) >= seen);
}

const bindOf = (who: 'alice' | 'dave') => world.probeAs(world.users[who]!, [{ op: 'bind', source: { kind: 'dir', path: world.dirs[who] } }]).then(([r]) => r!);

const replacements: { name: string; put: (path: string) => void }[] = [
  { name: 'the policy file removed', put: (p) => rmSync(p) },
  { name: 'an empty policy file', put: (p) => writeFileSync(p, '') },
  { name: 'a policy file that is not JSON', put: (p) => writeFileSync(p, '{"version": 1, "methods": {') },
  { name: 'a policy file the schema refuses', put: (p) => writeFileSync(p, JSON.stringify({ version: 1, methods: { BindIdmapped: { users: ['*'] } }, permissive: true })) },
  { name: 'JSON null', put: (p) => writeFileSync(p, 'null') },
  { name: 'a directory in its place', put: (p) => { rmSync(p); mkdirSync(p); } },
  { name: 'a dangling symlink in its place', put: (p) => { rmSync(p); symlinkSync('/nonexistent/policy.json', p); } },
];

for (const r of replacements) {
  t.test(`${r.name} + SIGHUP keeps the last policy`, async (tt) => {
    const path = world.broker.policyPath;
    tt.equal((await bindOf('dave')).name, errorName('PolicyDenied'), 'dave is denied before');
    r.put(path);
    const line = await reload();
    tt.equal(line.allowed, false, `the reload is audited as refused (${String(line.message)})`);
    const dave = await bindOf('dave');
    tt.equal(dave.ok, false, 'dave is still denied');
    tt.equal(dave.name, errorName('PolicyDenied'), `PolicyDenied (${dave.name}: ${dave.message})`);
    tt.match(dave.message ?? '', /may not call BindIdmapped/, 'by the last policy\'s rule');
    tt.ok((await bindOf('alice')).ok, 'alice is still allowed');
    // Put the good policy back for the next case.
    rmSync(path, { recursive: true, force: true });
    writeFileSync(path, policyText);
    const back = await reload();
    tt.equal(back.allowed, true, 'a valid file is applied again');
    await world.served(tt, world.users.alice!);
  });
}
