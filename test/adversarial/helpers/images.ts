// Filesystem images a user makes themselves, and mounts of them made for the
// user the way udisks2 does (root, loop device, ro,nosuid,nodev, at a
// directory the user owns): the kernel parses the user's bytes, and only the
// mount flags keep the device nodes in them inert. Plus a root-only block
// device holding a known secret, for those device nodes to point at.
import { execFileSync } from 'node:child_process';
import { chownSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runAs } from '../../helpers/run-as.js';
import type { TestUser } from '../../helpers/users.js';
import { unmountIfMounted } from './fuse.js';

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();

export interface SecretDevice {
  dev: string;
  major: number;
  minor: number;
  secret: string;
  cleanup(): void;
}

/** A read-only loop device (root:disk 0660) over a root-only file that holds `secret`. */
export function secretBlockDevice(dir: string): SecretDevice {
  const secret = `TOP-SECRET-MOUNTGATE-${process.pid}`;
  const file = join(dir, 'root-only-secret.img');
  writeFileSync(file, Buffer.concat([Buffer.from(secret), Buffer.alloc(1024 * 1024 - secret.length)]), { mode: 0o600 });
  const dev = sh('losetup', ['--find', '--show', '--read-only', file]);
  const rdev = statSync(dev).rdev;
  return {
    dev,
    major: Math.floor(rdev / 256) & 0xfff,
    minor: (rdev & 0xff) | ((rdev >> 12) & 0xfff00),
    secret,
    cleanup() {
      try {
        sh('losetup', ['-d', dev]);
      } catch {
        // already detached
      }
      rmSync(file, { force: true });
    },
  };
}

async function asUser(user: TestUser, script: string): Promise<void> {
  const r = await runAs(user, ['sh', '-ec', script]);
  if (r.code !== 0) throw new Error(`as ${user.name}: ${script}: ${r.stderr}`);
}

export interface DeviceNode {
  name: string;
  major: number;
  minor: number;
}

/**
 * An ext4 image made by the user (mkfs.ext4 -d of a directory of theirs, so its
 * root is theirs), holding a block device node the user owns, mode 0666, made
 * with debugfs: nothing a user needs privileges for.
 */
export async function userExt4Image(user: TestUser, dir: string, node: DeviceNode): Promise<string> {
  const src = join(dir, 'ext4-src');
  const image = join(dir, 'user-made.ext4');
  await asUser(user, [
    `mkdir -p ${src} && echo hello > ${src}/readme`,
    `mkfs.ext4 -q -F -E root_owner=${user.uid}:${user.gid} -d ${src} ${image} 8M`,
    `debugfs -w -R "mknod ${node.name} b ${node.major} ${node.minor}" ${image}`,
    `debugfs -w -R "sif ${node.name} mode 060666" ${image}`,
    `debugfs -w -R "sif ${node.name} uid ${user.uid}" ${image}`,
    `debugfs -w -R "sif ${node.name} gid ${user.gid}" ${image}`,
  ].join('\n'));
  return image;
}

/** A squashfs image made by the user with a device node from a mksquashfs pseudo-definition. */
export async function userSquashfs(user: TestUser, dir: string, node: DeviceNode): Promise<string> {
  const src = join(dir, 'sqfs-src');
  const image = join(dir, 'user-made.sqfs');
  await asUser(user, [
    `mkdir -p ${src} && echo hello > ${src}/readme`,
    `mksquashfs ${src} ${image} -quiet -noappend -no-progress -p "${node.name} b 0666 ${user.uid} ${user.gid} ${node.major} ${node.minor}"`,
  ].join('\n'));
  return image;
}

export interface RootMount {
  mountpoint: string;
  loop?: string;
  cleanup(): void;
}

/** What udisks2 does for a user's removable disk: a loop device, mounted ro,nosuid,nodev at a directory the user owns. */
export function udisksStyleMount(image: string, mountpoint: string, owner: TestUser): RootMount {
  mkdirSync(mountpoint, { recursive: true });
  chownSync(mountpoint, owner.uid, owner.gid);
  const loop = sh('losetup', ['--find', '--show', '--read-only', image]);
  try {
    sh('mount', ['-o', 'ro,nosuid,nodev', loop, mountpoint]);
  } catch (err) {
    sh('losetup', ['-d', loop]);
    throw err;
  }
  return {
    mountpoint,
    loop,
    cleanup() {
      unmountIfMounted(mountpoint);
      try {
        sh('losetup', ['-d', loop]);
      } catch {
        // already detached
      }
    },
  };
}

/** Root mounts (bind, tmpfs) made by the test with `mount` arguments; cleanup unmounts them. */
export function rootMount(args: string[], mountpoint: string): RootMount {
  sh('mount', [...args, mountpoint]);
  return { mountpoint, cleanup: () => unmountIfMounted(mountpoint) };
}

/** Loop devices still attached to files under dir (a test must leave none). */
export function loopsUnder(dir: string): string[] {
  return sh('losetup', ['-a']).split('\n').filter((l) => l.includes(dir));
}
