// The policy as a table: plain data in, verdict out. No root, no bus.
import t from 'tap';
import { decideBind, decideExplain, type CallerIdentity, type SourceFacts } from '../../src/policy/decide.js';
import { defaultPolicy } from '../../src/policy/default.js';
import { planBind, describePlan } from '../../src/policy/plan.js';
import type { BindRequest, Policy } from '../../src/schema/types.generated.js';

const alice: CallerIdentity = {
  uid: 1000,
  pid: 42,
  account: { name: 'alice', gid: 1000, groups: ['alice', 'dev'], subuids: [{ start: 100000, count: 65536 }], subgids: [{ start: 100000, count: 65536 }] },
};
const noSubids: CallerIdentity = { ...alice, account: { ...alice.account!, subuids: [], subgids: [] } };
const unknown: CallerIdentity = { uid: 4242, pid: 1 };
/** A system account (uid 995, below login.defs' UID_MIN) with subordinate ranges and a directory of its own. */
const daemon: CallerIdentity = { uid: 995, pid: 7, account: { ...alice.account!, name: 'daemon', gid: 993, idFloor: { uid: 1000, gid: 1000 } } };
const withFloor: CallerIdentity = { ...alice, account: { ...alice.account!, idFloor: { uid: 1000, gid: 1000 } } };
const home: SourceFacts = { kind: 'directory', ownerUid: 1000, fsType: 'ext4', fsDenied: false, path: '/home/alice/src', inBrokerNamespace: true, mountOptions: [], mountsBelow: [] };
const idle = { inFlight: 0, lastMinute: 0 };

interface Row {
  name: string;
  caller?: CallerIdentity;
  request?: BindRequest;
  source?: Partial<SourceFacts>;
  policy?: Policy;
  usage?: { inFlight: number; lastMinute: number };
  allowed: boolean;
  reason?: string;
  message?: RegExp;
}

const onlyGroup: Policy = { version: 1, methods: { BindIdmapped: { groups: ['dev'] } } };
const nobody: Policy = { version: 1, methods: {} };

const rows: Row[] = [
  { name: 'identity over own ids on an owned directory', allowed: true },
  { name: 'a user account, with the floor of system ids known', caller: withFloor, allowed: true },
  { name: 'a system account: its own uid is below UID_MIN', caller: daemon, source: { ownerUid: 995 }, allowed: false, reason: 'PolicyDenied', message: /uidMap\[0\] 995 -> 995: host ids 995 include ids of system accounts \(below UID_MIN 1000 in \/etc\/login\.defs\)/ },
  { name: 'a system account mapping only subordinate ids: allowed', caller: daemon, source: { ownerUid: 995 }, request: { uidMap: [{ from: 100000, to: 100000, count: 10 }], gidMap: [{ from: 100000, to: 100000, count: 10 }] }, allowed: true },
  { name: 'explicit swap of own uid and a subordinate id', request: { uidMap: [{ from: 1000, to: 100999, count: 1 }, { from: 100999, to: 1000, count: 1 }] }, allowed: true },
  { name: 'unknown uid', caller: unknown, allowed: false, reason: 'PolicyDenied', message: /uid 4242 has no entry in \/etc\/passwd/ },
  { name: 'no subordinate ids', caller: noSubids, allowed: false, reason: 'PolicyDenied', message: /no range in \/etc\/subuid or \/etc\/subgid/ },
  { name: 'method allowed to nobody', policy: nobody, allowed: false, reason: 'PolicyDenied', message: /allows BindIdmapped to nobody/ },
  { name: 'allowed by group membership', policy: onlyGroup, allowed: true },
  { name: 'not in the allowed group', policy: { version: 1, methods: { BindIdmapped: { groups: ['wheel'] } } }, allowed: false, reason: 'PolicyDenied', message: /may not call BindIdmapped/ },
  { name: 'concurrency limit', usage: { inFlight: 8, lastMinute: 8 }, allowed: false, reason: 'LimitExceeded', message: /8 in progress, the limit is 8/ },
  { name: 'rate limit', usage: { inFlight: 0, lastMinute: 600 }, allowed: false, reason: 'LimitExceeded', message: /600 in the last minute/ },
  { name: 'a fifo is not a directory', source: { kind: 'fifo' }, allowed: false, reason: 'InvalidRequest', message: /is a fifo, not a directory/ },
  { name: 'proc is a kernel filesystem', source: { fsType: 'proc', fsDenied: true, path: '/proc/1000' }, allowed: false, reason: 'PolicyDenied', message: /on proc/ },
  { name: 'denied area by path', source: { path: '/dev/shm/x' }, allowed: false, reason: 'PolicyDenied', message: /under \/dev/ },
  { name: 'a sibling of a denied area is fine', source: { path: '/devices/x' }, allowed: true },
  { name: 'owned by root', source: { ownerUid: 0 }, allowed: false, reason: 'NotOwner', message: /not owned by you \(uid 1000\); it is owned by uid 0/ },
  { name: 'on-disk root mapped to the caller', request: { uidMap: [{ from: 0, to: 1000, count: 1 }] }, allowed: false, reason: 'PolicyDenied', message: /on-disk ids 0 include ids you do not control/ },
  { name: 'host root as target', request: { uidMap: [{ from: 1000, to: 0, count: 1 }] }, allowed: false, reason: 'PolicyDenied', message: /host ids 0 include/ },
  { name: 'range one past the subordinate range', request: { uidMap: [{ from: 100000, to: 100000, count: 65537 }] }, allowed: false, reason: 'PolicyDenied', message: /100000\.\.165536/ },
  { name: 'gid map checked against subgids', request: { gidMap: [{ from: 0, to: 100000, count: 1 }] }, allowed: false, reason: 'PolicyDenied', message: /gidMap\[0\]/ },
  { name: 'a directory of another mount namespace (or a detached mount)', source: { inBrokerNamespace: false }, allowed: false, reason: 'InvalidRequest', message: /not in the broker's mount namespace/ },
  { name: 'a directory with a mount below it: a bind would uncover what it hides', source: { mountsBelow: ['/home/alice/src/secret'] }, allowed: false, reason: 'PolicyDenied', message: /has a mount below it \(\/home\/alice\/src\/secret\)/ },
  { name: 'the source mount\'s flags are kept, locked', source: { mountOptions: ['ro', 'noexec'] }, allowed: true, message: /nosuid, nodev, ro, noexec \(ro, noexec from the source mount\), locked by the kernel/ },
  { name: 'overlapping ranges are malformed', request: { uidMap: [{ from: 100000, to: 100000, count: 10 }, { from: 100005, to: 100100, count: 2 }] }, allowed: false, reason: 'InvalidRequest', message: /overlap/ },
];

for (const row of rows) {
  t.test(row.name, async (tt) => {
    const v = decideBind({
      caller: row.caller ?? alice,
      request: row.request ?? {},
      source: { ...home, ...row.source },
      policy: row.policy ?? defaultPolicy,
      usage: row.usage ?? idle,
    });
    tt.equal(v.allowed, row.allowed, row.allowed ? 'allowed' : 'denied');
    if (!row.allowed) {
      tt.equal(v.error?.reason, row.reason);
      tt.match(v.error?.message, row.message!);
      tt.equal(v.grant, undefined, 'a denial grants nothing');
    } else {
      tt.ok(v.grant?.nosuid && v.grant?.nodev, 'nosuid and nodev are always granted');
      if (row.message) tt.match(v.checks.map((c) => c.message).join('\n'), row.message);
    }
    tt.ok(v.checks.length > 0, 'the verdict lists its checks');
  });
}

t.test('the default map is the identity over the ids the caller controls', async (tt) => {
  const v = decideBind({ caller: alice, request: {}, source: home, policy: defaultPolicy, usage: idle });
  tt.same(v.grant!.uidMap, [{ from: 1000, to: 1000, count: 1 }, { from: 100000, to: 100000, count: 65536 }]);
});

t.test('the plan is plain data: userns, clone, setattr with forced flags, lock, reply', async (tt) => {
  const v = decideBind({ caller: alice, request: { readOnly: true }, source: home, policy: defaultPolicy, usage: idle });
  const plan = planBind(v.grant!);
  tt.same(plan.steps.map((s) => s.step), ['userns', 'clone', 'setattr', 'lock', 'reply']);
  tt.same((plan.steps[2] as { set: string[] }).set, ['idmap', 'nosuid', 'nodev', 'rdonly']);
  tt.match(describePlan(plan).join('\n'), /open_tree\(fd 0, OPEN_TREE_CLONE \| AT_RECURSIVE\)/);
  tt.match(describePlan(plan).join('\n'), /the kernel locks every flag/);
});

t.test('Explain needs its own permission', async (tt) => {
  tt.equal(decideExplain(alice, defaultPolicy, idle).allowed, true);
  tt.equal(decideExplain(alice, nobody, idle).error?.reason, 'PolicyDenied');
  tt.equal(decideExplain(noSubids, defaultPolicy, idle).allowed, true, 'the default lets users without subids ask');
});
