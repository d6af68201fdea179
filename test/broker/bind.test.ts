// BindIdmapped end to end: a real broker on a private bus with the production
// bus policy, real unprivileged users, the real kernel. Every refusal is tried
// as an unprivileged caller, and each is followed by a call of another user
// that must still be served.
import t from 'tap';
import { chmodSync, chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, type World } from '../helpers/world.js';
import { runAs } from '../helpers/run-as.js';
import { pkgRoot } from '../helpers/paths.js';
import type { TestUser } from '../helpers/users.js';

const probe = join(pkgRoot, 'test', 'helpers', 'probe-client.mjs');

let world: World;
t.before(async () => {
  world = await createWorld({
    users: { alice: {}, bob: {}, carol: { subids: false }, dave: {} },
    policy: (u) => ({
      version: 1,
      methods: {
        BindIdmapped: { users: [u.alice!.name, u.bob!.name, u.carol!.name] },
        Explain: { users: ['*'], requireSubordinateIds: false },
      },
      limits: { concurrentRequests: 4, requestsPerMinute: 100000 },
      deniedSources: ['/proc', '/sys', '/dev'],
    }),
  });
});
t.teardown(() => world?.teardown());

type Reply = { ok: boolean; name?: string; message?: string; body?: unknown[]; info?: Record<string, unknown>; [k: string]: unknown };

async function probeAs(user: TestUser, ops: unknown[]): Promise<Reply[]> {
  const r = await runAs(user, [process.execPath, probe, JSON.stringify(ops)], { busAddress: world.bus.address });
  if (r.code !== 0) throw new Error(`probe failed (${r.code}): ${r.stderr}`);
  return r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Reply);
}

/** After a refusal, the broker must still serve another user. */
async function stillServes(tt: Tap.Test): Promise<void> {
  const [r] = await probeAs(world.users.bob!, [{ op: 'bind', source: { kind: 'dir', path: world.dirs.bob }, request: {} }]);
  tt.ok(r!.ok, 'the broker still serves the next caller (bob binds his own directory)');
}

t.test('GetInfo reports the caller and the kernel features', async (tt) => {
  const [r] = await probeAs(world.users.alice!, [{ op: 'info' }]);
  tt.ok(r!.ok);
  tt.equal(r!.info!.uid, world.users.alice!.uid, 'the broker sees the real uid');
  tt.equal(r!.info!.idmappedMounts, true, 'idmapped mounts detected on this kernel');
});

t.test('a user binds a directory it owns: the mount is idmapped and shows shifted owners', async (tt) => {
  const alice = world.users.alice!;
  writeFileSync(join(world.dirs.alice!, 'hello.txt'), 'hello from alice\n');
  chownSync(join(world.dirs.alice!, 'hello.txt'), alice.uid, alice.gid);
  const mnt = join(world.scratch, 'alice-mnt');
  mkdirSync(mnt);
  chownSync(mnt, alice.uid, alice.gid);
  const script = `ls -ln ${mnt}/hello.txt; cat ${mnt}/hello.txt; setpriv --reuid=1000 --regid=1000 --clear-groups sh -c 'echo made-inside > ${mnt}/new.txt'; grep ' ${mnt} ' /proc/self/mountinfo`;
  const r = await runAs(alice, [process.execPath, join(pkgRoot, 'bin', 'mountgate'), 'run', '--bind', `${world.dirs.alice}:${mnt}:owner=1000`, '--', 'sh', '-c', script], { busAddress: world.bus.address });
  tt.equal(r.code, 0, `mountgate run exits 0 (stderr: ${r.stderr})`);
  tt.match(r.stdout, /^-rw-r--r-- 1 1000 1000 17 .*hello\.txt$/m, 'alice\'s file appears owned by uid/gid 1000 inside her namespace');
  tt.match(r.stdout, /hello from alice/, 'its content reads through the mount');
  tt.match(r.stdout, /idmapped/, 'mountinfo shows an idmapped mount');
  tt.match(r.stdout, /nosuid,nodev/, 'nosuid and nodev are set');
  const { statSync, readFileSync } = await import('node:fs');
  const made = statSync(join(world.dirs.alice!, 'new.txt'));
  tt.equal(made.uid, alice.uid, 'a file written by uid 1000 inside lands on disk owned by alice');
  tt.equal(made.gid, alice.gid, '... and by her group');
  tt.equal(readFileSync(join(world.dirs.alice!, 'new.txt'), 'utf8'), 'made-inside\n');
  const audit = await world.broker.waitFor((l) => l.event === 'result' && l.method === 'BindIdmapped' && (l.caller as { uid: number }).uid === alice.uid);
  tt.ok(audit.mounted, 'the broker audited what it mounted');
});

const refusals: { name: string; user: string; op: (w: World) => unknown; error: string; reason: RegExp }[] = [
  { name: 'a directory owned by root (/etc)', user: 'alice', op: () => ({ op: 'bind', source: { kind: 'dir', path: '/etc' } }), error: 'NotOwner', reason: /\/etc is not owned by you \(uid \d+\); it is owned by uid 0/ },
  { name: "another user's directory", user: 'alice', op: (w) => ({ op: 'bind', source: { kind: 'dir', path: w.dirs.bob } }), error: 'NotOwner', reason: /is not owned by you/ },
  { name: 'a directory under /proc (owned by the caller)', user: 'alice', op: () => ({ op: 'bind', source: { kind: 'dir', path: '/proc/self' } }), error: 'PolicyDenied', reason: /on proc, a kernel filesystem/ },
  { name: 'a pipe passed as the directory', user: 'alice', op: (w) => ({ op: 'bind', source: { kind: 'pipe', path: join(w.dirs.alice!, 'fifo') } }), error: 'InvalidRequest', reason: /is a fifo, not a directory/ },
  { name: 'a regular file passed as the directory', user: 'alice', op: (w) => ({ op: 'bind', source: { kind: 'file', path: w.file('plain.txt', 'x', w.users.alice) } }), error: 'InvalidRequest', reason: /is a regular, not a directory/ },
  {
    name: 'a map whose host ids are outside the caller\'s ranges',
    user: 'alice',
    op: (w) => ({ op: 'bind', source: { kind: 'dir', path: w.dirs.alice }, request: { uidMap: [{ from: w.users.alice!.uid, to: 0, count: 1 }] } }),
    error: 'PolicyDenied',
    reason: /host ids 0 include ids you do not control/,
  },
  {
    name: 'a map whose on-disk ids include 0',
    user: 'alice',
    op: (w) => ({ op: 'bind', source: { kind: 'dir', path: w.dirs.alice }, request: { uidMap: [{ from: 0, to: w.users.alice!.uid, count: 1 }] } }),
    error: 'PolicyDenied',
    reason: /on-disk ids 0 include ids you do not control/,
  },
  {
    name: "a map whose on-disk ids include another user's uid",
    user: 'alice',
    op: (w) => ({ op: 'bind', source: { kind: 'dir', path: w.dirs.alice }, request: { uidMap: [{ from: w.users.bob!.uid, to: w.users.alice!.subuid.start, count: 1 }] } }),
    error: 'PolicyDenied',
    reason: /on-disk ids \d+ include ids you do not control/,
  },
  {
    name: 'overlapping ranges',
    user: 'alice',
    op: (w) => {
      const s = w.users.alice!.subuid.start;
      return { op: 'bind', source: { kind: 'dir', path: w.dirs.alice }, request: { uidMap: [{ from: s, to: s, count: 10 }, { from: s + 5, to: s + 100, count: 10 }] } };
    },
    error: 'InvalidRequest',
    reason: /overlap on the on-disk side/,
  },
  {
    name: 'a range that overflows the id space',
    user: 'alice',
    op: (w) => ({ op: 'bind', source: { kind: 'dir', path: w.dirs.alice }, request: { uidMap: [{ from: 4294967290, to: w.users.alice!.subuid.start, count: 100 }] } }),
    error: 'InvalidRequest',
    reason: /runs past the largest id/,
  },
  { name: 'a request that is not JSON', user: 'alice', op: (w) => ({ op: 'bind', source: { kind: 'dir', path: w.dirs.alice }, request: '{"uidMap": [' }), error: 'InvalidRequest', reason: /is not valid JSON/ },
  { name: 'a request with an unknown field', user: 'alice', op: (w) => ({ op: 'bind', source: { kind: 'dir', path: w.dirs.alice }, request: { uidMap: [], recursive: true } }), error: 'InvalidRequest', reason: /unknown field "recursive"/ },
  { name: 'a user the policy does not allow', user: 'dave', op: (w) => ({ op: 'bind', source: { kind: 'dir', path: w.dirs.dave } }), error: 'PolicyDenied', reason: /may not call BindIdmapped/ },
  { name: 'a user without subordinate ids', user: 'carol', op: (w) => ({ op: 'bind', source: { kind: 'dir', path: w.dirs.carol } }), error: 'PolicyDenied', reason: /has no range in \/etc\/subuid or \/etc\/subgid/ },
  { name: 'a call with the wrong signature', user: 'alice', op: () => ({ op: 'raw', member: 'BindIdmapped', signature: 's', body: ['{}'] }), error: 'InvalidRequest', reason: /takes arguments of signature "hs"/ },
];

for (const r of refusals) {
  t.test(`refuses ${r.name}`, async (tt) => {
    const [reply] = await probeAs(world.users[r.user]!, [r.op(world)]);
    tt.equal(reply!.ok, false, 'refused');
    tt.equal(reply!.name, `org.mountgate.Error.${r.error}`, `error name ${r.error}`);
    tt.match(reply!.message ?? '', r.reason, 'the message names the reason');
    await stillServes(tt);
  });
}

t.test('refusals are audited with their reason', async (tt) => {
  const line = await world.broker.waitFor((l) => l.event === 'decision' && l.reason === 'NotOwner');
  tt.match(String(line.message), /not owned by you/);
  tt.type((line.caller as { pid: number }).pid, 'number', 'the audit line names the caller pid');
});

t.test('a burst of 500 pipelined calls carrying fds: every call answered, others still served, no fd leaked', async (tt) => {
  // One bind first, so the user namespace for alice's identity map is cached
  // (the cache holds one fd per mapping) before the fds are counted.
  await probeAs(world.users.alice!, [{ op: 'bind', source: { kind: 'dir', path: world.dirs.alice }, request: {} }]);
  const before = world.broker.openFds();
  // The bus keeps the system bus's own limits (64 queued fds and 128 pending
  // replies per connection): the burst meets the daemon's flow control too.
  const burst = probeAs(world.users.alice!, [{ op: 'burst', count: 500, dir: world.dirs.alice, fifo: join(world.dirs.alice!, 'burst-fifo') }]);
  await new Promise((res) => setTimeout(res, 1000));
  await stillServes(tt);
  const [r] = await burst;
  const byName = r!.byName as Record<string, number>;
  tt.equal(r!.sent, 500, '500 calls were sent');
  tt.equal(r!.answered, 500, 'all 500 got a reply: a return or a named bus error');
  tt.equal(Object.values(byName).reduce((a, b) => a + b, 0), 500, 'and every one of them is counted by its answer');
  tt.comment(`answers: ${JSON.stringify(byName)}`);
  tt.comment(`what they said: ${JSON.stringify(r!.said)}`);
  // The daemon drops its own replies to the broker while the broker's queue is full: a burst once made the
  // broker's GetConnectionCredentials go unanswered, and the burst's connections were denied after 10 s.
  tt.same(Object.keys(r!.said as Record<string, number>).filter((k) => /who you are/.test(k)), [], 'every connection of the burst was identified');
  const known = new Set(['ok', 'org.mountgate.Error.InvalidRequest', 'org.mountgate.Error.LimitExceeded', 'org.mountgate.Error.PolicyDenied', 'org.freedesktop.DBus.Error.LimitsExceeded']);
  tt.same(Object.keys(byName).filter((k) => !known.has(k)), [], 'every answer is a bind, a refusal by the broker, or the daemon\'s own limit');
  tt.ok((byName['org.mountgate.Error.InvalidRequest'] ?? 0) + (byName.ok ?? 0) > 0, 'some calls were fully examined');
  // The broker's fd table returns to where it started once replies are out.
  let after = world.broker.openFds();
  for (let k = 0; k < 100 && after > before; k++) {
    await new Promise((res) => setTimeout(res, 100));
    after = world.broker.openFds();
  }
  tt.ok(after <= before, `broker fds back to ${before} (now ${after})`);
  await stillServes(tt);
});

t.test('a client inside a user namespace authenticates with the bus and is seen as its real uid', async (tt) => {
  const alice = world.users.alice!;
  const r = await runAs(alice, ['unshare', '--user', '--map-root-user', process.execPath, probe, JSON.stringify([{ op: 'info' }])], { busAddress: world.bus.address });
  tt.equal(r.code, 0, `the client ran (stderr: ${r.stderr})`);
  const reply = JSON.parse(r.stdout.trim()) as Reply;
  tt.ok(reply.ok, 'GetInfo answered');
  tt.equal(reply.info!.uid, alice.uid, 'the broker sees alice\'s real uid, not the namespace\'s 0');
});

t.test('Explain prints the verdict and plan without mounting', async (tt) => {
  const [ok, denied] = await probeAs(world.users.alice!, [
    { op: 'explain', method: 'BindIdmapped', request: {}, source: { kind: 'dir', path: world.dirs.alice } },
    { op: 'explain', method: 'BindIdmapped', request: {}, source: { kind: 'dir', path: '/etc' } },
  ]);
  tt.ok(ok!.ok, ok!.ok ? 'explained' : `explain failed: ${ok!.name}: ${ok!.message}`);
  const v = ok!.verdict as { allowed: boolean; plan: { text: string[] } };
  tt.equal(v.allowed, true);
  tt.match(v.plan.text.join('\n'), /open_tree[^]*mount_setattr\(idmap, nosuid, nodev\)/, 'the plan lists the mount steps');
  const d = denied!.verdict as { allowed: boolean; error: { name: string } };
  tt.equal(d.allowed, false);
  tt.equal(d.error.name, 'org.mountgate.Error.NotOwner');
});

t.test('run --dry-run prints the verdict and plan of each bind and mounts nothing', async (tt) => {
  const cli = join(pkgRoot, 'bin', 'mountgate');
  const ok = await runAs(world.users.alice!, [process.execPath, cli, 'run', '--dry-run', '--bind', `${world.dirs.alice}:/mnt:owner=1000`, '--', 'true'], { busAddress: world.bus.address });
  tt.equal(ok.code, 0, ok.stderr);
  tt.match(ok.stdout, /--bind .*:\/mnt: would be allowed/);
  tt.match(ok.stdout, /plan setattr: mount_setattr\(idmap, nosuid, nodev\)/);
  tt.match(ok.stdout, /namespace: uid_map 0->\d+x1 1->\d+x65536; then: true/);
  const denied = await runAs(world.users.alice!, [process.execPath, cli, 'run', '--dry-run', '--bind', '/etc:/mnt', '--', 'true'], { busAddress: world.bus.address });
  tt.equal(denied.code, 5, 'the exit code of the refusal (not owner)');
  tt.match(denied.stdout, /FAIL \/etc is not owned by you/);
});
