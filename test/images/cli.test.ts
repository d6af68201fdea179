// Images end to end, through the CLI as real users: a real broker on a
// private bus, the real kernel (EROFS, overlayfs, idmapped mounts). Alice
// adds a directory, reads every file back through `run --image` (at a path,
// and as the command's root, read-only and --writable), and removes it; Bob
// adding the same tree must upload every object again (proof of possession).
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, chownSync, copyFileSync, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, type World } from '../helpers/world.js';
import { runAs, type RunResult } from '../helpers/run-as.js';
import { cliPath, repoRoot } from '../helpers/paths.js';
import { installPrograms } from '../helpers/programs.js';
import type { TestUser } from '../helpers/users.js';
import { manifestFromDirectory, objectPath } from '../../src/client/images.js';

let world: World;
t.before(async () => {
  world = await createWorld({
    users: { alice: {}, bob: {} },
    policy: {
      version: 1,
      methods: {
        AddImage: { users: ['*'] },
        PutObjects: { users: ['*'] },
        MountImage: { users: ['*'] },
        ListImages: { users: ['*'] },
        RemoveImage: { users: ['*'] },
        BindIdmapped: { users: ['*'] },
      },
      limits: { concurrentRequests: 4, requestsPerMinute: 100000 },
    },
  });
});
t.teardown(() => world?.teardown());

function cli(user: TestUser, args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  return runAs(user, [process.execPath, cliPath, ...args], { busAddress: world.bus.address, env, timeoutMs: 120_000 });
}

function chownTree(path: string, user: TestUser): void {
  execFileSync('chown', ['-R', '--no-dereference', `${user.uid}:${user.gid}`, path]);
}

const big = randomBytes(1_500_000);
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Alice's tree: files, a symlink, a hardlink, a subdir, a file > 1 MiB, a file of uid 1000, and a few programs. */
function buildTree(dir: string, owner: TestUser): void {
  mkdirSync(join(dir, 'sub'), { recursive: true });
  for (const d of ['etc', 'dev', 'proc', 'sys', 'tmp', 'mnt']) mkdirSync(join(dir, d));
  writeFileSync(join(dir, 'hello.txt'), 'hello from the image\n');
  writeFileSync(join(dir, 'big.bin'), big);
  writeFileSync(join(dir, 'sub', 'nested.txt'), 'nested\n');
  writeFileSync(join(dir, 'etc', 'motd'), 'welcome to the image\n');
  writeFileSync(join(dir, 'empty'), '');
  writeFileSync(join(dir, 'script.sh'), '#!/bin/sh\necho script ran\n');
  chmodSync(join(dir, 'script.sh'), 0o750);
  symlinkSync('hello.txt', join(dir, 'link'));
  linkSync(join(dir, 'hello.txt'), join(dir, 'sub', 'hard'));
  installPrograms(dir, ['/bin/sh', '/bin/cat', '/bin/ls', '/bin/stat', '/bin/sleep']);
  chownTree(dir, owner);
  // A file of the owner's first subordinate id + 999: uid/gid 1000 in the image.
  writeFileSync(join(dir, 'of-1000.txt'), 'mine as 1000\n');
  chownSync(join(dir, 'of-1000.txt'), owner.subuid.start + 999, owner.subgid.start + 999);
}

let aliceImage = '';
let aliceUploaded = { objects: 0, bytes: 0 };

t.test('alice adds a directory: the id, and every object uploaded', async (tt) => {
  const alice = world.users.alice!;
  const tree = join(world.dirs.alice!, 'tree');
  buildTree(tree, alice);
  const r = await cli(alice, ['image', 'add', tree, '--json']);
  tt.equal(r.code, 0, `image add exits 0 (stderr: ${r.stderr})`);
  const out = JSON.parse(r.stdout) as { id: string; uploaded: { objects: number; bytes: number } };
  tt.match(out.id, /^[0-9a-f]{64}$/, 'the image id is 64 hex');
  tt.ok(out.uploaded.objects >= 8, `every distinct non-empty content was uploaded (${out.uploaded.objects} objects)`);
  tt.ok(out.uploaded.bytes > big.length, 'including the big file');
  aliceImage = out.id;
  aliceUploaded = out.uploaded;

  const again = await cli(alice, ['image', 'add', tree, '--json']);
  tt.equal(again.code, 0, `adding it again works (stderr: ${again.stderr})`);
  tt.match(JSON.parse(again.stdout), { id: aliceImage, uploaded: { objects: 0, bytes: 0 } }, 'the same id, nothing to upload the second time');

  const ls = await cli(alice, ['image', 'ls', '--json']);
  tt.equal(ls.code, 0, `image ls exits 0 (stderr: ${ls.stderr})`);
  const images = JSON.parse(ls.stdout) as { id: string; name?: string; missing: number; objects: number }[];
  tt.equal(images.length, 1);
  tt.match(images[0], { id: aliceImage, name: 'tree', missing: 0, objects: aliceUploaded.objects });
  const table = await cli(alice, ['image', 'ls']);
  tt.match(table.stdout, new RegExp(`^${aliceImage.slice(0, 12)} +tree `, 'm'), 'the table shows the short id and the name');
});

t.test('run --image ID:DIR shows every file with its content, owner and mode', async (tt) => {
  const alice = world.users.alice!;
  const mnt = join(world.dirs.alice!, 'mnt');
  mkdirSync(mnt);
  chownSync(mnt, alice.uid, alice.gid);
  const script = [
    `cat ${mnt}/hello.txt ${mnt}/sub/hard ${mnt}/sub/nested.txt ${mnt}/of-1000.txt`,
    `readlink ${mnt}/link`,
    `sha256sum ${mnt}/big.bin`,
    `cd ${mnt} && stat -c '%n %F %u %g %a %s %h %i' hello.txt sub/hard big.bin empty script.sh of-1000.txt sub link`,
    `${mnt}/script.sh`,
    `grep " ${mnt} " /proc/self/mountinfo`,
  ].join('; ');
  const r = await cli(alice, ['run', '--image', `${aliceImage}:${mnt}`, '--', 'sh', '-c', script]);
  tt.equal(r.code, 0, `run exits 0 (stderr: ${r.stderr})`);
  tt.match(r.stdout, 'hello from the image\nhello from the image\nnested\nmine as 1000\nhello.txt\n', 'contents, the hardlink and the symlink read back');
  tt.match(r.stdout, `${sha256(big)}  ${mnt}/big.bin`, 'the big file reads back whole');
  const stat = new Map(r.stdout.split('\n').filter((l) => /^\S+ (regular|directory|symbolic)/.test(l)).map((l) => [l.split(' ')[0]!, l]));
  tt.match(stat.get('hello.txt'), /^hello\.txt regular file 0 0 644 21 2 (\d+)$/, 'alice\'s file appears owned by root inside, mode 644, two links');
  const inode = (n: string) => stat.get(n)?.split(' ').pop();
  tt.equal(inode('sub/hard'), inode('hello.txt'), 'the hardlink is the same inode');
  tt.match(stat.get('big.bin'), /^big\.bin regular file 0 0 644 1500000 1 /);
  tt.match(stat.get('empty'), /^empty regular (empty )?file 0 0 644 0 1 /, 'the empty file');
  tt.match(stat.get('script.sh'), /^script\.sh regular file 0 0 750 /, 'mode 750 kept');
  tt.match(stat.get('of-1000.txt'), /^of-1000\.txt regular file 1000 1000 644 /, 'a file of subordinate id +999 appears as uid/gid 1000');
  tt.match(stat.get('sub'), /^sub directory 0 0 755 /);
  tt.match(stat.get('link'), /^link symbolic link 0 0 777 /);
  tt.match(r.stdout, 'script ran', 'an executable file runs from the image');
  tt.match(r.stdout, / ro,nosuid,nodev.* - overlay /, 'the mount is a read-only, nosuid, nodev overlay');
});

t.test('run --image with the image at /: the command runs inside it', async (tt) => {
  const alice = world.users.alice!;
  const script = 'cat /etc/motd; stat -c "%u %g" /hello.txt; ls /proc/self/ns/mnt >/dev/null && echo proc ok; echo tmp > /tmp/t && cat /tmp/t; ls /; echo nope > /new.txt || echo read-only';
  const r = await cli(alice, ['run', '--image', aliceImage.slice(0, 12), '--', 'sh', '-c', script]);
  tt.equal(r.code, 0, `run exits 0 (stderr: ${r.stderr})`);
  tt.match(r.stdout, /^welcome to the image\n0 0\nproc ok\ntmp\n/, 'files of the image at /, owned by root; /proc and a writable /tmp');
  tt.match(r.stdout, /^sub$/m, 'ls / lists the image');
  tt.notMatch(r.stdout, /^home$/m, 'not the host\'s root');
  tt.match(r.stdout, /read-only/, 'the image itself cannot be written');
  tt.match(r.stderr, /Read-only file system/);

  const byName = await cli(alice, ['run', '--image', 'tree', '--cwd', '/sub', '--', 'cat', 'nested.txt']);
  tt.equal(byName.code, 0, `the image by name, with --cwd inside it (stderr: ${byName.stderr})`);
  tt.equal(byName.stdout, 'nested\n');

  const bound = await cli(alice, ['run', '--image', 'tree', '--bind', `${world.dirs.alice}:/mnt`, '--', 'ls', '/mnt/tree/sub']);
  tt.equal(bound.code, 0, `a --bind lands at its path inside the image (stderr: ${bound.stderr})`);
  tt.match(bound.stdout, /nested\.txt/);

  const missing = await cli(alice, ['run', '--image', 'tree', '--bind', `${world.dirs.alice}:/nowhere`, '--', 'true']);
  tt.not(missing.code, 0, 'a bind at a directory the read-only image lacks fails');
  tt.match(missing.stderr, /mountgate: cannot mount the bind at \/nowhere: the image has no directory \/nowhere and is read-only/);
});

t.test('run --image --writable: writes land in the scratch upper directory, not in the image', async (tt) => {
  const alice = world.users.alice!;
  const tmp = join(world.dirs.alice!, 'tmp');
  mkdirSync(tmp);
  chownSync(tmp, alice.uid, alice.gid);
  const running = cli(alice, ['run', '--image', 'tree', '--writable', '--bind', `${world.dirs.alice}:/new/dir`, '--', 'sh', '-c', 'echo written > /new.txt && echo more >> /hello.txt && cat /new.txt /hello.txt && ls /new/dir/tree >/dev/null && sleep 3'], { TMPDIR: tmp });
  // While it runs, the upper directory holds the writes.
  let upperFile: string | undefined;
  for (let i = 0; i < 100 && !upperFile; i++) {
    await new Promise((r) => setTimeout(r, 100));
    for (const d of existsSync(tmp) ? readdirSync(tmp) : []) {
      const f = join(tmp, d, 'image0', 'upper', 'new.txt');
      if (existsSync(f)) upperFile = f;
    }
  }
  const r = await running;
  tt.equal(r.code, 0, `run exits 0 (stderr: ${r.stderr})`);
  tt.equal(r.stdout, 'written\nhello from the image\nmore\n', 'the command sees its writes');
  tt.ok(upperFile, `the new file appeared in the upper directory under ${tmp} while the command ran`);
  tt.same(readdirSync(tmp), [], 'the scratch directory is removed afterwards');
  const after = await cli(alice, ['run', '--image', 'tree', '--', 'sh', '-c', 'cat /hello.txt; test -e /new.txt && echo LEAKED || echo absent']);
  tt.equal(after.stdout, 'hello from the image\nabsent\n', 'the image is unchanged');
});

t.test('image add MANIFEST --objects DIR: contents come from a composefs object directory', async (tt) => {
  const alice = world.users.alice!;
  const src = join(world.dirs.alice!, 'msrc');
  mkdirSync(join(src, 'd'), { recursive: true });
  writeFileSync(join(src, 'd', 'one'), `one ${randomBytes(8).toString('hex')}\n`);
  writeFileSync(join(src, 'two'), randomBytes(70_000));
  const { manifest, sources } = await manifestFromDirectory(src, { name: 'from-manifest', uidMap: [{ from: 0, to: 0, count: 1 }], gidMap: [{ from: 0, to: 0, count: 1 }] });
  const manifestFile = join(world.dirs.alice!, 'image.json');
  writeFileSync(manifestFile, JSON.stringify(manifest));
  const objects = join(world.dirs.alice!, 'objects');
  for (const [digest, path] of sources) {
    mkdirSync(join(objects, digest.slice(0, 2)), { recursive: true });
    copyFileSync(path, join(objects, objectPath(digest)));
  }
  chownTree(objects, alice);

  const without = await cli(alice, ['image', 'add', manifestFile]);
  tt.equal(without.code, 7, 'without --objects the contents are not found (exit 7)');
  tt.match(without.stderr, /^mountgate: the broker needs 2 object\(s\) that no source provides: [0-9a-f]{64} \(needed by \/(d\/one|two)\)/);
  tt.match(without.stderr, /--objects DIR/, 'and says how to provide them');

  const r = await cli(alice, ['image', 'add', manifestFile, '--objects', objects, '--json']);
  tt.equal(r.code, 0, `image add with --objects exits 0 (stderr: ${r.stderr})`);
  const out = JSON.parse(r.stdout) as { id: string; uploaded: { objects: number; bytes: number } };
  tt.same(out.uploaded, { objects: 2, bytes: (manifest.entries.find((e) => e.path === '/d/one') as { size: number }).size + 70_000 });
  const run = await cli(alice, ['run', '--image', `from-manifest:${join(world.dirs.alice!, 'mnt')}`, '--', 'cat', join(world.dirs.alice!, 'mnt', 'd', 'one')]);
  tt.equal(run.stdout, readFileSync(join(src, 'd', 'one'), 'utf8'), `the content reads back (stderr: ${run.stderr})`);
  const rm = await cli(alice, ['image', 'rm', 'from-manifest']);
  tt.equal(rm.code, 0, `removed by name (stderr: ${rm.stderr})`);
});

t.test('bob adds the same tree: the store has the objects, but bob must upload them again', async (tt) => {
  const bob = world.users.bob!;
  const tree = join(world.dirs.bob!, 'tree');
  buildTree(tree, bob);
  const r = await cli(bob, ['image', 'add', tree, '--json']);
  tt.equal(r.code, 0, `image add exits 0 (stderr: ${r.stderr})`);
  const out = JSON.parse(r.stdout) as { id: string; uploaded: { objects: number; bytes: number } };
  tt.equal(out.uploaded.objects, aliceUploaded.objects, 'every object was asked for and sent again');
  tt.equal(out.uploaded.bytes, aliceUploaded.bytes);
  const ls = await cli(bob, ['image', 'ls', '--json']);
  tt.match(JSON.parse(ls.stdout), [{ id: out.id, missing: 0 }], 'bob sees only his image, complete');
  const run = await cli(bob, ['run', '--image', 'tree', '--', 'cat', '/hello.txt']);
  tt.equal(run.stdout, 'hello from the image\n', `bob runs it (stderr: ${run.stderr})`);
});

t.test('image rm by id prefix or name; unknown references are refused', async (tt) => {
  const alice = world.users.alice!;
  const bad = await cli(alice, ['image', 'rm', 'abc']);
  tt.equal(bad.code, 7, 'an unknown reference: not found (exit 7)');
  tt.match(bad.stderr, /^mountgate: you have no image abc/);
  const r = await cli(alice, ['image', 'rm', aliceImage.slice(0, 8)]);
  tt.equal(r.code, 0, `rm by an 8-character prefix (stderr: ${r.stderr})`);
  tt.equal(r.stdout, `${aliceImage}\n`);
  tt.same(JSON.parse((await cli(alice, ['image', 'ls', '--json'])).stdout), [], 'alice has no image left');
  const gone = await cli(alice, ['run', '--image', aliceImage, '--', 'true']);
  tt.equal(gone.code, 7, 'running a removed image: not found');
  const bob = world.users.bob!;
  tt.equal((await cli(bob, ['image', 'ls', '--json'])).stdout.includes('"missing":0'), true, 'bob\'s image is untouched');
  const rb = await cli(bob, ['image', 'rm', 'tree']);
  tt.equal(rb.code, 0, `bob removes his by name (stderr: ${rb.stderr})`);
  tt.same(JSON.parse((await cli(bob, ['image', 'ls', '--json'])).stdout), []);
});
