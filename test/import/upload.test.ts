// The upload of an archive's contents: each content the broker lacks goes as
// a sealed memfd passed as an fd, a window of them at a time, and a content
// too large to spool as bytes on the same socket, in the archive's order
// (small files before, between and after large ones). Imported by one user
// from a file and by a second from a pipe (contents kept from the first
// read), each image mounted and every file read back through the kernel.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { createWorld, type World } from '../helpers/world.js';
import { runAs, type RunResult } from '../helpers/run-as.js';
import { cliPath } from '../helpers/paths.js';
import type { TestUser } from '../helpers/users.js';

const MiB = 1 << 20;
let world: World;
let layer = '';
const files = new Map<string, Buffer>();
t.before(async () => {
  world = await createWorld({
    users: { alice: {}, bob: {} },
    policy: {
      version: 1,
      methods: { AddImage: { users: ['*'] }, PutObjects: { users: ['*'] }, MountImage: { users: ['*'] }, ListImages: { users: ['*'] }, RemoveImage: { users: ['*'] } },
      limits: { concurrentRequests: 4, requestsPerMinute: 100000 },
    },
  });
  const tree = join(world.scratch, 'tree');
  // In archive order: 300 small files (more than a window of fds), a file larger than what is spooled, more small files, a second large one, one more small one.
  const order: string[] = [];
  const add = (name: string, content: Buffer) => {
    mkdirSync(join(tree, name, '..'), { recursive: true });
    writeFileSync(join(tree, name), content, { mode: 0o644 });
    files.set(name, content);
    order.push(name);
  };
  for (let i = 0; i < 300; i++) add(`a/f${i}`, Buffer.from(`small file ${i}\n`.repeat(1 + (i % 50))));
  add('big/first', randomBytes(20 * MiB));
  for (let i = 0; i < 20; i++) add(`b/f${i}`, randomBytes(1 + i * 20_000));
  add('big/second', randomBytes(17 * MiB));
  add('c/same-as-a-f7', files.get('a/f7')!);
  add('c/last', Buffer.from('the last one\n'));
  layer = join(world.scratch, 'layer.tar');
  execFileSync('tar', ['--format=posix', '--numeric-owner', '--no-recursion', '-C', tree, '-cf', layer, ...order]);
});
t.teardown(() => world?.teardown());

function cli(user: TestUser, args: string[], stdinFile?: string): Promise<RunResult> {
  const argv = [process.execPath, cliPath, ...args];
  if (stdinFile) return runAs(user, ['sh', '-c', `cat "$0" | exec "$@"`, stdinFile, ...argv], { busAddress: world.bus.address, timeoutMs: 180_000 });
  return runAs(user, argv, { busAddress: world.bus.address, timeoutMs: 180_000 });
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function readsBack(tt: Tap.Test, user: TestUser, id: string, dirName: string): Promise<void> {
  const mnt = join(world.dirs[dirName]!, 'mnt');
  mkdirSync(mnt, { recursive: true });
  chownSync(mnt, user.uid, user.gid);
  const names = [...files.keys()];
  const run = await cli(user, ['run', '--image', `${id}:${mnt}`, '--', 'sh', '-c', `cd ${mnt} && sha256sum ${names.join(' ')}`]);
  tt.equal(run.code, 0, `run exits 0 (stderr: ${run.stderr})`);
  const expected = names.map((n) => `${sha256(files.get(n)!)}  ${n}\n`).join('');
  tt.equal(run.stdout, expected, `all ${names.length} files read back through the kernel as they were`);
}

t.test('a layer of small and large files: uploaded whole from a file, and by a second user from a pipe', async (tt) => {
  const distinct = new Map([...files.values()].map((b) => [sha256(b), b.length]));
  const bytes = [...distinct.values()].reduce((a, b) => a + b, 0);
  const alice = world.users.alice!;
  const r = await cli(alice, ['image', 'add', layer, '--name', 'mixed', '--json']);
  tt.equal(r.code, 0, `image add exits 0 (stderr: ${r.stderr})`);
  const out = JSON.parse(r.stdout) as { id: string; uploaded: { objects: number; bytes: number } };
  tt.same(out.uploaded, { objects: distinct.size, bytes }, 'every distinct content went up once');
  await readsBack(tt, alice, out.id, 'alice');

  // The store holds every object; bob must still prove each, from contents kept in memory on the first read.
  const bob = world.users.bob!;
  const p = await cli(bob, ['image', 'add', '-', '--name', 'mixed', '--json'], layer);
  tt.equal(p.code, 0, `image add - exits 0 (stderr: ${p.stderr})`);
  const piped = JSON.parse(p.stdout) as { id: string; uploaded: { objects: number; bytes: number } };
  tt.equal(piped.id, out.id, 'the same image');
  tt.same(piped.uploaded, { objects: distinct.size, bytes }, 'a second user proves every content');
  await readsBack(tt, bob, piped.id, 'bob');
});
