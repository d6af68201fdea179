// The executor carries out a composefs plan that asks for verity=require: the
// overlay is mounted with the option (the kernel lists it), and a data file
// without fs-verity then cannot be read (EIO), where the same image mounted
// without the option reads. The object here has no fs-verity enabled (on a
// kernel without CONFIG_FS_VERITY, as here, none can): the kernel still makes
// the mount, and enforces the option on every read. And a grant's noexec
// holds on the overlay, the mount a caller execs through: the layer's own
// noexec does not reach it (measured: a program on a noexec lower layer runs
// through a plain overlay of it).
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { executePlan } from '../../src/broker/execute.js';
import { MountLocker } from '../../src/broker/lock.js';
import { planComposefsMount } from '../../src/policy/plan.js';
import { moveMount } from '../../src/sys/syscalls.js';
import { UserNamespaceCache } from '../../src/sys/userns.js';
import { clearableFlags } from '../helpers/mount-flags.js';
import { imageMtime, writeObjectImage } from '../helpers/object-image.js';

const base = mkdtempSync(join(tmpdir(), 'mountgate-execute-'));
const objectsDir = join(base, 'objects');
const cache = new UserNamespaceCache();
mkdirSync(join(base, 'run'));
const locker = new MountLocker(join(base, 'run'), 60_000);
t.teardown(() => {
  locker.close();
  cache.close();
  rmSync(base, { recursive: true, force: true });
});

const content = Buffer.from('data behind the overlay\n'.repeat(300));
const script = Buffer.from('#!/bin/sh\necho ran\n');
const image = join(base, 'image.cfs');
writeObjectImage(image, objectsDir, content, [{ path: '/x', type: 'file', mode: 0o755, uid: 0, gid: 0, mtime: imageMtime, size: script.length, inline: script.toString('base64') }]);
const grant = { uidMap: [{ from: 0, to: 100000, count: 65536 }], gidMap: [{ from: 0, to: 200000, count: 65536 }], noexec: false };

/**
 * Mounts the image by the plan at a fresh directory; returns the overlay's
 * mount and super options, what reading /f gives, and what running /x gives.
 */
async function mountAndRead(verity: boolean, noexec = false): Promise<{ flags: string[]; options: string[]; read: string; ran: string; clearable: string[] }> {
  const mnt = mkdtempSync(join(base, 'mnt-'));
  const plan = planComposefsMount({ ...grant, noexec }, image, objectsDir, { verity, fileBackedErofs: true });
  const { mountFd } = await executePlan(plan, [], { userns: cache, locker });
  let clearable: string[];
  try {
    clearable = clearableFlags(mountFd, noexec ? ['ro', 'nosuid', 'nodev', 'noexec'] : ['ro', 'nosuid', 'nodev']);
    moveMount(mountFd, mnt);
  } finally {
    closeSync(mountFd);
  }
  try {
    const line = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === mnt) ?? '';
    const flags = line.split(' ')[5]?.split(',') ?? [];
    const options = (line.split(' - ')[1] ?? '').split(' ')[2]?.split(',') ?? [];
    let read: string;
    try {
      read = readFileSync(join(mnt, 'f')).equals(content) ? 'the content' : 'other bytes';
    } catch (err) {
      read = (err as NodeJS.ErrnoException).code ?? String(err);
    }
    let ran: string;
    try {
      ran = execFileSync(join(mnt, 'x'), { stdio: 'pipe' }).toString().trim();
    } catch (err) {
      ran = (err as NodeJS.ErrnoException).code ?? String(err);
    }
    return { flags, options, read, ran, clearable };
  } finally {
    execFileSync('umount', [mnt]);
  }
}

t.test('a plan with verity: the overlay is mounted with verity=require, and unverified data is refused', async (tt) => {
  const { options, read } = await mountAndRead(true);
  tt.ok(options.includes('verity=require'), `the kernel lists verity=require (${options.join(',')})`);
  tt.equal(read, 'EIO', 'a data file without fs-verity cannot be read');
});

t.test('the same image without verity: no option, and the data reads', async (tt) => {
  const { options, read } = await mountAndRead(false);
  tt.notOk(options.some((o) => o.startsWith('verity=') && o !== 'verity=off'), `no verity requirement (${options.join(',')})`);
  tt.equal(read, 'the content');
});

t.test('a grant with noexec: the overlay the caller gets is noexec, and a program in the image does not run', async (tt) => {
  const { flags, ran, clearable } = await mountAndRead(false, true);
  tt.ok(['ro', 'nosuid', 'nodev', 'noexec'].every((f) => flags.includes(f)), `the overlay's mount is ro, nosuid, nodev, noexec (${flags.join(',')})`);
  tt.equal(ran, 'EACCES', 'exec through it is refused');
  tt.same(clearable, [], 'and the flags are locked: even real root clears none of them');
});

t.test('without noexec: ro, nosuid and nodev, and the program runs', async (tt) => {
  const { flags, ran, clearable } = await mountAndRead(false);
  tt.ok(['ro', 'nosuid', 'nodev'].every((f) => flags.includes(f)) && !flags.includes('noexec'), `ro, nosuid, nodev (${flags.join(',')})`);
  tt.equal(ran, 'ran');
  tt.same(clearable, [], 'locked');
});
