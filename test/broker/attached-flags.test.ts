// A bind mount the broker hands out carries its flags locked by the kernel
// (the 'lock' plan step): once the user attaches it in its own namespace it
// can clear none of ro, nosuid, nodev, noexec. Before the lock (measured on
// 6.18) it could clear them all. This pins both the lock and, beneath it, the
// second line: on-disk ids the user does not control stay unmapped (no
// rights, no set-id, no device access) and permissions on disk still apply.
import t from 'tap';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { createWorld, type World } from '../helpers/world.js';
import { runAs } from '../helpers/run-as.js';
import { cliPath } from '../helpers/paths.js';

let world: World;
t.before(async () => {
  world = await createWorld({ users: { alice: {} } });
});
t.teardown(() => world?.teardown());

t.test('the attached bind keeps ro, nosuid, nodev and noexec locked, and root-owned content stays out of reach', async (tt) => {
  const dir = world.dirs.alice!;
  writeFileSync(join(dir, 'secret'), 'top secret\n', { mode: 0o600 });
  writeFileSync(join(dir, 'public'), 'public\n', { mode: 0o644 });
  mkdirSync(join(dir, 'rootdir'), { mode: 0o755 });
  copyFileSync('/usr/bin/id', join(dir, 'suid-id'));
  chmodSync(join(dir, 'suid-id'), 0o4755);
  execFileSync('mknod', ['-m', '0600', join(dir, 'null-dev'), 'c', '1', '3']);
  const target = join(world.scratch, 'target');
  mkdirSync(target);
  execFileSync('chown', [`${world.users.alice!.uid}`, target]);

  const script = [
    `grep " ${target} " /proc/self/mountinfo | cut -d' ' -f6`,
    ...['rw', 'suid', 'dev', 'exec'].map((flag) => `mount -o remount,bind,${flag} ${target} 2>/dev/null && echo CLEARED-${flag} || echo LOCKED-${flag}`),
    `grep " ${target} " /proc/self/mountinfo | cut -d' ' -f6`,
    `cat ${target}/secret 2>/dev/null || echo SECRET-DENIED`,
    `cat ${target}/public`,
    `touch ${target}/rootdir/x 2>/dev/null || echo ROOTDIR-DENIED`,
    `(echo changed > ${target}/public) 2>/dev/null || echo PUBLIC-WRITE-DENIED`,
    `echo "suid-euid=$(setpriv --reuid=1000 --regid=1000 --clear-groups ${target}/suid-id -u)"`,
    `head -c1 ${target}/null-dev 2>/dev/null && echo DEV-OPENED || echo DEV-DENIED`,
    `chown 0 ${target}/public 2>/dev/null || echo CHOWN-DENIED`,
  ].join('; ');
  const r = await runAs(world.users.alice!, [process.execPath, cliPath, 'run', '--bind', `${dir}:${target}:ro,noexec`, '--', 'sh', '-c', script], { busAddress: world.bus.address });
  tt.equal(r.code, 0, `run exits 0 (stderr: ${r.stderr})`);
  for (const flag of ['rw', 'suid', 'dev', 'exec']) tt.match(r.stdout, new RegExp(`^LOCKED-${flag}$`, 'm'), `the user cannot remount it ${flag}: the kernel locked the flag`);
  tt.notMatch(r.stdout, /CLEARED-/, 'no flag could be cleared');
  const flags = r.stdout.split('\n').filter((l) => /^r[ow],/.test(l));
  tt.equal(flags.length, 2, `the mount's flags were read before and after (${r.stdout})`);
  tt.equal(flags[0], flags[1], 'the flags are unchanged after every attempt');
  tt.match(flags[1]!, /^ro,nosuid,nodev,noexec/, 'still ro, nosuid, nodev, noexec');
  tt.match(r.stdout, /SECRET-DENIED/, 'a root-owned 0600 file stays unreadable');
  tt.match(r.stdout, /^public$/m, 'a root-owned 0644 file is readable, as it was on the host');
  tt.match(r.stdout, /ROOTDIR-DENIED/, 'a root-owned directory stays unwritable');
  tt.match(r.stdout, /PUBLIC-WRITE-DENIED/, 'a root-owned file stays unwritable');
  tt.match(r.stdout, /DEV-DENIED/, 'a root-owned device node stays unopenable');
  tt.match(r.stdout, /CHOWN-DENIED/, 'files it does not own cannot be given away');
  tt.equal(readFileSync(join(dir, 'public'), 'utf8'), 'public\n', 'the host file is unchanged');
});
