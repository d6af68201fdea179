// The loop-device path for kernels without file-backed EROFS (before 6.12),
// forced here with --erofs-backing loop: while the user's reader holds the
// mount, a read-only autoclear loop device backed by the broker's image file
// exists and an EROFS superblock sits on it (the EROFS layer's source is that
// /dev/loopN, not the file); the image reads back; and the device goes away by
// itself (autoclear) once the mount is gone.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
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

interface Loop {
  name: string;
  'back-file': string | null;
  autoclear: boolean | string;
  ro: boolean | string;
}

/** Loop devices backed by `file` (on this machine other runs may hold loop devices of their own). */
function loopsBackedBy(file: string): Loop[] {
  const out = execFileSync('losetup', ['-J', '-O', 'NAME,BACK-FILE,AUTOCLEAR,RO'], { encoding: 'utf8' });
  const devices = out.trim() === '' ? [] : (JSON.parse(out) as { loopdevices: Loop[] }).loopdevices;
  return devices.filter((d) => d['back-file'] !== null && d['back-file'].replace(/ \(deleted\)$/, '') === file);
}
const yes = (v: boolean | string) => v === true || v === '1';

async function until(pred: () => boolean, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((res) => setTimeout(res, 50))) if (pred()) return true;
  return pred();
}

t.test('an image mounted through a loop device: the device backs the image while mounted, reads back, and is released', async (tt) => {
  const alice = world.users.alice!;
  const content = Buffer.from('through a loop device\n'.repeat(400));
  const digest = new FsVerityHasher().update(content).digest().toString('hex');
  const mtime = { sec: 1700000000, nsec: 0 };
  const target = join(world.scratch, 'loop-target');
  mkdirSync(target);
  chownSync(target, alice.uid, alice.gid);
  const ready = join(world.dirs.alice!, 'mounted');
  const release = join(world.dirs.alice!, 'release');
  const spec = join(world.dirs.alice!, 'spec.json');
  writeFileSync(spec, JSON.stringify({
    manifest: { version: 1, entries: [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime }, { path: '/f', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size: content.length, digest }] },
    objects: { [digest]: content.toString('base64') },
    target,
    // Holds the mount (its namespace) until the test has looked at the device.
    command: `head -n 1 ${target}/f; grep " ${target} " /proc/self/mountinfo | grep -o 'overlay composefs'; : > ${ready}; for k in $(seq 600); do [ -e ${release} ] && break; sleep 0.05; done`,
  }));
  const reader = runAs(alice, [process.execPath, join(pkgRoot, 'test', 'helpers', 'image-reader.mjs'), spec], { busAddress: world.bus.address, env: { MOUNTGATE_TEST_PKG: pkgRoot } });
  let image = '';
  try {
    tt.ok(await until(() => existsSync(ready), 30_000), 'the reader has the image mounted');
    const line = world.broker.audit.find((l) => l.event === 'result' && l.method === 'MountImage');
    const imageId = (line?.mounted as { image?: string } | undefined)?.image;
    tt.match(imageId, /^[0-9a-f]{64}$/, 'the mount was audited with its image');
    image = realpathSync(join(world.broker.stateDir, 'images', String(imageId), 'image.erofs'));
    const backing = loopsBackedBy(image);
    tt.equal(backing.length, 1, `one loop device is backed by the image file ${image}`);
    const dev = backing[0];
    if (dev) {
      tt.match(dev.name, /^\/dev\/loop\d+$/, 'a loop device');
      tt.ok(yes(dev.ro), `${dev.name} is read-only`);
      tt.ok(yes(dev.autoclear), `${dev.name} is autoclear`);
      const id = dev.name.slice('/dev/'.length);
      // An EROFS superblock registers itself in sysfs under its device's name: the mount's source is the loop device.
      tt.ok(existsSync(`/sys/fs/erofs/${id}`), `an EROFS filesystem is mounted from ${dev.name} (/sys/fs/erofs/${id})`);
      tt.equal(readFileSync(`/sys/block/${id}/loop/backing_file`, 'utf8').trim(), image, 'sysfs agrees on the backing file');
    }
  } finally {
    writeFileSync(release, '');
  }
  const r = await reader;
  tt.equal(r.code, 0, `reader ran (stderr: ${r.stderr})`);
  tt.match(r.stdout, /^through a loop device$/m, 'the file reads through the composefs mount');
  tt.match(r.stdout, /overlay composefs/, 'it is the composefs overlay');
  if (image) tt.ok(await until(() => loopsBackedBy(image).length === 0, 5000), 'the loop device detached itself once the namespace (and its mount) was gone');
});
