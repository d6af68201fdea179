// The loop-device path for kernels without file-backed EROFS (before 6.12),
// forced here with --erofs-backing loop: the image mounts and reads, and the
// loop device goes away by itself (autoclear) once the mount is gone.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FsVerityHasher } from '../../src/verity/fsverity.js';
import { createWorld, type World } from '../helpers/world.js';
import { runAs } from '../helpers/run-as.js';
import { pkgRoot } from '../helpers/paths.js';

let world: World;
t.before(async () => {
  world = await createWorld({ users: { alice: {} }, brokerArgs: ['--erofs-backing', 'loop'] });
});
t.teardown(() => world?.teardown());

const loops = () => execFileSync('losetup', ['-a'], { encoding: 'utf8' }).split('\n').filter(Boolean);

t.test('an image mounted through a loop device reads back, and the device is released', async (tt) => {
  const before = loops().length;
  const content = Buffer.from('through a loop device\n'.repeat(400));
  const digest = new FsVerityHasher().update(content).digest().toString('hex');
  const mtime = { sec: 1700000000, nsec: 0 };
  const target = join(world.scratch, 'loop-target');
  mkdirSync(target);
  chownSync(target, world.users.alice!.uid, world.users.alice!.gid);
  const spec = join(world.dirs.alice!, 'spec.json');
  writeFileSync(spec, JSON.stringify({
    manifest: { version: 1, entries: [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime }, { path: '/f', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size: content.length, digest }] },
    objects: { [digest]: content.toString('base64') },
    target,
    command: `head -n 1 ${target}/f; grep " ${target} " /proc/self/mountinfo | grep -o 'overlay composefs'; losetup -a | wc -l`,
  }));
  const r = await runAs(world.users.alice!, [process.execPath, join(pkgRoot, 'test', 'helpers', 'image-reader.mjs'), spec], { busAddress: world.bus.address, env: { MOUNTGATE_TEST_PKG: pkgRoot } });
  tt.equal(r.code, 0, `reader ran (stderr: ${r.stderr})`);
  tt.match(r.stdout, /^through a loop device$/m, 'the file reads through the composefs mount');
  tt.match(r.stdout, /overlay composefs/, 'it is the composefs overlay');
  const line = world.broker.audit.find((l) => l.method === 'MountImage' && l.allowed === true);
  tt.ok(line, 'the mount was audited');
  for (let k = 0; k < 50 && loops().length > before; k++) await new Promise((res) => setTimeout(res, 100));
  tt.equal(loops().length, before, 'the loop device detached itself once the namespace (and its mount) was gone');
});
