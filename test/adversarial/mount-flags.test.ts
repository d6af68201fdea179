// Finding 1: mount flags laundered through BindIdmapped. The mount a caller
// gets back must never be weaker than the mount that protects its source
// today: inside the caller's own user+mount namespace, a remount that clears
// ro, nosuid, nodev or noexec must fail (the kernel locks them), and a device
// node the user made in a filesystem image stays unopenable.
import t from 'tap';
import { chmodSync, chownSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runAs } from '../helpers/run-as.js';
import type { TestUser } from '../helpers/users.js';
import { cli, createAdvWorld, errorName, processesLeft, spawnAs, type AdvWorld } from './helpers/adv-world.js';
import { allowOther, fuseMountsAt, openDevFuse, unmountIfMounted } from './helpers/fuse.js';
import { loopsUnder, rootMount, secretBlockDevice, udisksStyleMount, userExt4Image, userSquashfs, type SecretDevice } from './helpers/images.js';

let world: AdvWorld;
let secret: SecretDevice;
t.before(async () => {
  world = await createAdvWorld({
    users: { alice: {}, bob: {} },
    policy: {
      version: 1,
      methods: { BindIdmapped: { users: ['*'] }, Explain: { users: ['*'], requireSubordinateIds: false } },
      limits: { concurrentRequests: 8, requestsPerMinute: 100000 },
    },
  });
  secret = secretBlockDevice(world.scratch);
  await world.probeAs(world.users.alice!, [{ op: 'bind', source: { kind: 'dir', path: world.dirs.alice } }]);
});
t.teardown(async () => {
  secret?.cleanup();
  await world?.teardown();
});

/**
 * Inside the caller's namespace (mountgate run): for each of ro, nosuid, nodev,
 * noexec the mount has, try a remount that clears only that one; then try the
 * device node, a write and an exec. One line per outcome.
 */
const probeScript = `
m=$1; dev=$2
opts() { awk -v m="$m" '$5==m {print $6}' /proc/self/mountinfo | tail -1; }
o=$(opts); echo "OPTS $o"
for f in ro nosuid nodev noexec; do
  case ",$o," in *",$f,"*) ;; *) continue ;; esac
  case $f in ro) neg=rw ;; nosuid) neg=suid ;; nodev) neg=dev ;; noexec) neg=exec ;; esac
  keep=$(echo "$o" | tr , '\\n' | grep -vx -e "$f" -e idmapped | tr '\\n' , )
  if mount -o "remount,bind,$keep$neg" "$m" 2>/dev/null; then echo "CLEARED $f"; else echo "LOCKED $f"; fi
done
echo "OPTS-AFTER $(opts)"
if [ -n "$dev" ]; then
  if head -c 64 "$m/$dev" > /tmp/.mg-dev-read.$$ 2>/dev/null; then echo "DEVICE-READ $(tr -d '\\000' < /tmp/.mg-dev-read.$$)"; else echo DEVICE-REFUSED; fi
  rm -f /tmp/.mg-dev-read.$$
fi
if [ -n "$3" ]; then
  if (echo x > "$m/written-inside") 2>/dev/null; then echo WRITE-OK; else echo WRITE-REFUSED; fi
  if "$m/$3" 2>/dev/null; then echo EXEC-OK; else echo EXEC-REFUSED; fi
fi
`;

async function attachAndProbe(user: TestUser, source: string, name: string, args: { device?: string; exec?: string } = {}) {
  const target = join(world.scratch, `${user.name}-${name}-target`);
  mkdirSync(target, { recursive: true });
  chownSync(target, user.uid, user.gid);
  return runAs(user, [process.execPath, cli, 'run', '--bind', `${source}:${target}`, '--', 'sh', '-c', probeScript, 'sh', target, args.device ?? '', args.exec ?? ''], { busAddress: world.bus.address, timeoutMs: 30_000 });
}

function flagsLocked(tt: Tap.Test, out: string, flags: string[]) {
  for (const f of flags) {
    tt.match(out, new RegExp(`^LOCKED ${f}$`, 'm'), `clearing ${f} inside the caller's namespace fails`);
    tt.notMatch(out, new RegExp(`^CLEARED ${f}$`, 'm'), `${f} cannot be cleared`);
  }
  tt.notMatch(out, /^CLEARED /m, 'no flag at all could be cleared');
}

t.test('(a) a user-made ext4 image, loop-mounted ro,nosuid,nodev by root as udisks2 does: its device node stays dead', async (tt) => {
  const alice = world.users.alice!;
  const before = world.snapshot();
  const image = await userExt4Image(alice, world.dirs.alice!, { name: 'disk', major: secret.major, minor: secret.minor });
  const media = udisksStyleMount(image, join(world.dirs.alice!, 'media'), alice);
  try {
    const r = await attachAndProbe(alice, media.mountpoint, 'ext4', { device: 'disk' });
    tt.equal(r.code, 0, `the bind is granted and attached (stderr: ${r.stderr.slice(0, 500)})`);
    tt.comment(r.stdout);
    flagsLocked(tt, r.stdout, ['ro', 'nosuid', 'nodev']);
    tt.match(r.stdout, /^DEVICE-REFUSED$/m, 'the device node cannot be opened');
    tt.notMatch(r.stdout, new RegExp(secret.secret), 'the root-only block device was not read');
  } finally {
    media.cleanup();
  }
  tt.same(loopsUnder(world.dirs.alice!), [], 'no loop device left');
  await world.nothingLeft(tt, before, { stateMayChange: false });
  await world.served(tt, world.users.bob!);
});

t.test('(b) a device node on the user\'s own squashfuse (allow_other): stays dead', async (tt) => {
  const alice = world.users.alice!;
  const before = world.snapshot();
  const image = await userSquashfs(alice, world.dirs.alice!, { name: 'disk', major: secret.major, minor: secret.minor });
  const mnt = join(world.dirs.alice!, 'sqmnt');
  mkdirSync(mnt);
  chownSync(mnt, alice.uid, alice.gid);
  const restores = [openDevFuse(), allowOther()];
  const daemon = spawnAs(alice, ['squashfuse', '-f', '-o', 'allow_other', image, mnt]);
  try {
    for (let k = 0; k < 100 && !fuseMountsAt(mnt); k++) await new Promise((r) => setTimeout(r, 50));
    tt.ok(fuseMountsAt(mnt), `squashfuse mounted the image (${daemon.stderr()})`);
    const r = await attachAndProbe(alice, mnt, 'sqfs', { device: 'disk' });
    tt.comment(r.stdout);
    if (r.code === 0) {
      flagsLocked(tt, r.stdout, ['nosuid', 'nodev']);
      tt.match(r.stdout, /^DEVICE-REFUSED$/m, 'the device node cannot be opened');
    } else {
      // FUSE daemons that do not declare idmap support cannot be idmapped: a named refusal is as good.
      const errors = world.broker.audit.filter((l) => l.event === 'error').map((l) => String(l.message).split('\n')[0]);
      tt.comment(`broker errors: ${errors.join(' | ')}`);
      tt.notMatch(r.stderr, /failed to carry out the request/, `refused by name, not an internal error (stderr: ${r.stderr.slice(0, 300)})`);
    }
    tt.notMatch(r.stdout, new RegExp(secret.secret), 'the root-only block device was not read');
  } finally {
    daemon.kill();
    await daemon.done;
    unmountIfMounted(mnt);
    restores.forEach((f) => f());
  }
  tt.equal(await processesLeft(alice, 'squashfuse'), '', 'no FUSE daemon left');
  await world.nothingLeft(tt, before);
  await world.served(tt, world.users.bob!);
});

t.test('(c) an administrator\'s ro,noexec bind of the user\'s directory: cannot be made rw or exec', async (tt) => {
  const alice = world.users.alice!;
  const before = world.snapshot();
  const data = join(world.dirs.alice!, 'data');
  const adm = join(world.dirs.alice!, 'admin-ro');
  for (const d of [data, adm]) {
    mkdirSync(d);
    chownSync(d, alice.uid, alice.gid);
  }
  writeFileSync(join(data, 'tool.sh'), '#!/bin/sh\necho EXECUTED\n');
  chmodSync(join(data, 'tool.sh'), 0o755);
  chownSync(join(data, 'tool.sh'), alice.uid, alice.gid);
  const m = rootMount(['--bind', data], adm);
  try {
    rootMount(['-o', 'remount,bind,ro,noexec'], adm);
    const r = await attachAndProbe(alice, adm, 'admin', { exec: 'tool.sh' });
    tt.equal(r.code, 0, `the bind is granted and attached (stderr: ${r.stderr.slice(0, 500)})`);
    tt.comment(r.stdout);
    flagsLocked(tt, r.stdout, ['ro', 'noexec', 'nosuid', 'nodev']);
    tt.match(r.stdout, /^WRITE-REFUSED$/m, 'writes fail');
    tt.match(r.stdout, /^EXEC-REFUSED$/m, 'exec fails');
    tt.notMatch(r.stdout, /EXECUTED/, 'the tool did not run');
    tt.notOk(existsSync(join(data, 'written-inside')), 'nothing was written to the directory');
  } finally {
    m.cleanup();
  }
  await world.nothingLeft(tt, before);
  await world.served(tt, world.users.bob!);
});

t.test('(d) a directory with a mount below it (a tmpfs hiding a file): PolicyDenied, nothing revealed', async (tt) => {
  const alice = world.users.alice!;
  const before = world.snapshot();
  const top = join(world.dirs.alice!, 'withsub');
  const hidden = join(top, 'hidden');
  mkdirSync(hidden, { recursive: true });
  chownSync(top, alice.uid, alice.gid);
  chownSync(hidden, alice.uid, alice.gid);
  writeFileSync(join(hidden, 'under-the-mount.txt'), 'hidden by the tmpfs\n');
  const m = rootMount(['-t', 'tmpfs', '-o', 'mode=0755', 'tmpfs'], hidden);
  try {
    const [bind, explain] = await world.probeAs(alice, [
      { op: 'bind', source: { kind: 'dir', path: top } },
      { op: 'explain', method: 'BindIdmapped', source: { kind: 'dir', path: top } },
    ]);
    tt.equal(bind!.ok, false, 'refused');
    tt.equal(bind!.name, errorName('PolicyDenied'), `PolicyDenied (${bind!.name}: ${bind!.message})`);
    tt.match(bind!.message ?? '', /below it/, 'the message says there is a mount below it');
    const v = explain!.verdict as { allowed: boolean } | undefined;
    tt.equal(v?.allowed, false, 'Explain says it would be denied');
  } finally {
    m.cleanup();
  }
  await world.nothingLeft(tt, before);
  await world.served(tt, world.users.bob!);
});

t.test('(e) a plain directory on a nosuid,nodev tmpfs the user owns binds fine, with nosuid,nodev locked', async (tt) => {
  const alice = world.users.alice!;
  const before = world.snapshot();
  const dir = join(world.dirs.alice!, 'plain-tmpfs');
  mkdirSync(dir);
  const m = rootMount(['-t', 'tmpfs', '-o', `nosuid,nodev,mode=0755,uid=${alice.uid},gid=${alice.gid}`, 'tmpfs'], dir);
  try {
    writeFileSync(join(dir, 'tool.sh'), '#!/bin/sh\necho EXECUTED\n');
    chmodSync(join(dir, 'tool.sh'), 0o755);
    chownSync(join(dir, 'tool.sh'), alice.uid, alice.gid);
    const r = await attachAndProbe(alice, dir, 'plain', { exec: 'tool.sh' });
    tt.equal(r.code, 0, `the bind is granted and attached (stderr: ${r.stderr.slice(0, 500)})`);
    tt.comment(r.stdout);
    flagsLocked(tt, r.stdout, ['nosuid', 'nodev']);
    tt.match(r.stdout, /^WRITE-OK$/m, 'the user writes through it');
    tt.match(r.stdout, /^EXEC-OK$/m, 'and executes from it');
    tt.ok(existsSync(join(dir, 'written-inside')), 'the write landed in the directory');
  } finally {
    m.cleanup();
  }
  await world.nothingLeft(tt, before);
  await world.served(tt, world.users.bob!);
});

t.test('Explain of a bind says nosuid and nodev are locked, not "always"', async (tt) => {
  const [r] = await world.probeAs(world.users.alice!, [{ op: 'explain', method: 'BindIdmapped', request: { readOnly: true, noexec: true }, source: { kind: 'dir', path: world.dirs.alice } }]);
  const v = r!.verdict as { allowed: boolean; checks: { message: string }[]; plan?: { text: string[] } };
  tt.equal(v.allowed, true);
  const text = [...v.checks.map((c) => c.message), ...(v.plan?.text ?? [])].join('\n');
  tt.comment(text);
  const flagLine = v.checks.map((c) => c.message).find((m) => /nosuid/.test(m)) ?? '';
  tt.match(flagLine, /locked/, 'the flags check says the flags are locked');
  tt.notMatch(text, /nosuid, nodev \(always\)/, 'no claim of "nosuid, nodev (always)"');
});
