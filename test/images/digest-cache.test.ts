// `mountgate image add DIR` again, as a real user through the real broker:
// files unchanged since the last import are not read (their digests come from
// the user's cache), a file rewritten in place with its size and mtime put
// back is hashed again (its ctime changed) and the image holds its new
// content, and a cache forged to claim someone else's content for a file
// gets nothing: the broker asks for that object's bytes and refuses what
// does not hash to it, and keeps serving others. A layer tarball unchanged
// since its last import is not read again (its scan is cached), and the image
// it gives is the same, down to the layer export-layer rebuilds. Runs as
// root: it makes the users and starts the broker.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, type World } from '../helpers/world.js';
import { runAs, type RunResult } from '../helpers/run-as.js';
import { cliPath } from '../helpers/paths.js';
import type { TestUser } from '../helpers/users.js';
import { DigestCache, DIGEST_ALGORITHM, cachedStat } from '../../src/client/digest-cache.js';

let world: World;
t.before(async () => {
  world = await createWorld({
    users: { alice: {}, bob: {} },
    policy: {
      version: 1,
      methods: Object.fromEntries(['AddImage', 'PutObjects', 'ProveObjects', 'MountImage', 'ListImages', 'RemoveImage'].map((m) => [m, { users: ['*'] }])),
      limits: { concurrentRequests: 4, requestsPerMinute: 100000 },
    },
  });
});
t.teardown(() => world?.teardown());

/** Each user's XDG_CACHE_HOME (made by the test, owned by the user). */
const cacheHome = (user: TestUser) => join(world.scratch, `cache-${user.uid}`);

function cli(user: TestUser, args: string[]): Promise<RunResult> {
  return runAs(user, [process.execPath, cliPath, ...args], { busAddress: world.bus.address, env: { XDG_CACHE_HOME: cacheHome(user), XDG_DATA_HOME: join(cacheHome(user), 'data') }, timeoutMs: 120_000 });
}

interface Added {
  id: string;
  diffId?: string;
  scanCache?: 'hit' | 'miss';
  uploaded: { objects: number; bytes: number };
  proven: { objects: number; bytes: number };
  digestCache?: { hits: number; misses: number };
}

async function add(tt: Tap.Test, user: TestUser, tree: string, name: string, extra: string[] = []): Promise<Added> {
  const r = await cli(user, ['image', 'add', tree, '--name', name, '--json', ...extra]);
  tt.equal(r.code, 0, `image add exits 0${r.code ? `: ${r.stderr}` : ''}`);
  return JSON.parse(r.stdout) as Added;
}

const fsverityDigest = (file: string) => /^sha256:([0-9a-f]{64}) /.exec(execFileSync('fsverity', ['digest', file], { encoding: 'utf8' }))![1]!;
/** Files a record can be made of: changed more than the cache's two seconds ago (it skips fresher ones). */
const settle = () => new Promise((resolve) => setTimeout(resolve, 2200));

let aliceTree: string;
let layerTar: string;
t.before(async () => {
  const alice = world.users.alice!;
  aliceTree = join(world.dirs.alice!, 'tree');
  mkdirSync(join(aliceTree, 'sub'), { recursive: true });
  writeFileSync(join(aliceTree, 'kept'), 'a secret of alice, 32 bytes long');
  writeFileSync(join(aliceTree, 'edited'), 'a'.repeat(10_000));
  writeFileSync(join(aliceTree, 'sub', 'other'), 'other\n');
  mkdirSync(cacheHome(alice));
  execFileSync('chown', ['-R', `${alice.uid}:${alice.gid}`, aliceTree, cacheHome(alice)]);
  layerTar = join(world.dirs.alice!, 'layer.tar');
  execFileSync('tar', ['--numeric-owner', '-C', aliceTree, '-cf', layerTar, '.']);
  execFileSync('chown', [`${alice.uid}:${alice.gid}`, layerTar]);
  await settle();
});

t.test('again: unchanged files come from the cache; a file rewritten with its size and mtime put back is hashed again', async (tt) => {
  const alice = world.users.alice!;
  const first = await add(tt, alice, aliceTree, 'cached');
  tt.match(first.digestCache, { hits: 0, misses: 3 }, 'the first import hashes every file');
  tt.match(first, { proven: { objects: 3 }, uploaded: { objects: 0 } }, 'and the broker hashes them (ProveObjects): nothing left to upload');
  const cacheFile = join(cacheHome(alice), 'mountgate', `digests-${DIGEST_ALGORITHM}`);
  const st = statSync(cacheFile);
  tt.equal(st.uid, alice.uid, 'the cache is the user\'s own file');
  tt.equal(st.mode & 0o777, 0o600, 'readable by the user alone');

  const again = await add(tt, alice, aliceTree, 'cached');
  tt.match(again, { id: first.id, uploaded: { objects: 0 }, proven: { objects: 0 }, digestCache: { hits: 3, misses: 0 } }, 'again: no file read, the same image, nothing sent');

  const edited = join(aliceTree, 'edited');
  const before = statSync(edited, { bigint: true });
  // touch -r keeps the nanoseconds (utimensat); fs.utimesSync takes seconds as a double and loses them.
  const reference = join(world.scratch, 'edited-times');
  execFileSync('touch', ['-r', edited, reference]);
  writeFileSync(edited, 'b'.repeat(10_000));
  execFileSync('touch', ['-r', reference, edited]);
  const after = statSync(edited, { bigint: true });
  tt.equal(after.mtimeNs, before.mtimeNs, 'the same mtime');
  tt.equal(after.size, before.size, 'the same size');
  tt.not(after.ctimeNs, before.ctimeNs, 'only ctime tells');
  const changed = await add(tt, alice, aliceTree, 'cached');
  tt.match(changed.digestCache, { hits: 2, misses: 1 }, 'the edited file is hashed again, the others are not');
  tt.not(changed.id, first.id, 'a new image');
  tt.equal(changed.proven.objects, 1, 'its new content goes to the broker');
  const r = await cli(alice, ['run', '--image', `${changed.id}:/mnt`, '--', 'head', '-c', '5', '/mnt/edited']);
  tt.equal(r.code, 0, `run --image exits 0${r.code ? `: ${r.stderr}` : ''}`);
  tt.equal(r.stdout, 'bbbbb', 'the image holds the new content');

  const uncached = await add(tt, alice, aliceTree, 'cached', ['--no-digest-cache']);
  tt.equal(uncached.id, changed.id, '--no-digest-cache hashes every file to the same image');
  tt.notOk('digestCache' in uncached, 'and says nothing of a cache');
});

t.test("a cache forged to claim another user's content for a file of the same size gets nothing", async (tt) => {
  const [alice, bob] = [world.users.alice!, world.users.bob!];
  const tree = join(world.dirs.bob!, 'tree');
  mkdirSync(tree);
  const claim = join(tree, 'claim');
  writeFileSync(claim, 'bob guesses: 32 bytes, not hers');
  mkdirSync(cacheHome(bob));
  execFileSync('chown', ['-R', `${bob.uid}:${bob.gid}`, tree, cacheHome(bob)]);
  await settle();
  const theirs = fsverityDigest(join(aliceTree, 'kept'));
  const forged = DigestCache.load(join(cacheHome(bob), 'mountgate', `digests-${DIGEST_ALGORITHM}`));
  forged.set(cachedStat(statSync(claim, { bigint: true })), theirs);
  forged.save();
  execFileSync('chown', ['-R', `${bob.uid}:${bob.gid}`, cacheHome(bob)]);

  const r = await cli(bob, ['image', 'add', tree, '--name', 'forged', '--json']);
  tt.not(r.code, 0, 'the import fails');
  tt.match(r.stderr, new RegExp(`object ${theirs}: its content hashes to [0-9a-f]{64}; nothing of it was stored`), `the broker hashed bob's bytes and refused them: ${r.stderr.trim()}`);
  const ls = await cli(bob, ['image', 'ls', '--json']);
  tt.match(JSON.parse(ls.stdout), [{ name: 'forged', missing: 1 }], "bob's image still lacks the object (as any upload cut short leaves it: `image add` again to finish)");
  const mount = await cli(bob, ['run', '--image', 'forged:/mnt', '--', 'cat', '/mnt/claim']);
  tt.not(mount.code, 0, 'and cannot be mounted');
  tt.notMatch(mount.stdout, /secret/, "alice's content is not shown");
  const served = await cli(alice, ['image', 'ls', '--json']);
  tt.equal(served.code, 0, 'the broker still serves alice');
  tt.ok((JSON.parse(served.stdout) as unknown[]).length > 0, 'and her images are there');
});

t.test('a layer tarball again: its cached scan gives the same image (and layer); a rewritten archive is read again', async (tt) => {
  const alice = world.users.alice!;
  const first = await add(tt, alice, layerTar, 'layer');
  tt.equal(first.scanCache, 'miss', 'the first import reads the archive');
  const again = await add(tt, alice, layerTar, 'layer');
  tt.match(again, { id: first.id, diffId: first.diffId, scanCache: 'hit', uploaded: { objects: 0 } }, 'again: not read, the same image and diff ID, nothing sent');
  const out = join(world.dirs.alice!, 'exported.tar');
  const exported = await runAs(alice, ['sh', '-c', 'exec "$@" > "$0"', out, process.execPath, cliPath, 'image', 'export-layer', again.id, '0'], { busAddress: world.bus.address, env: { XDG_CACHE_HOME: cacheHome(alice), XDG_DATA_HOME: join(cacheHome(alice), 'data') }, timeoutMs: 120_000 });
  tt.equal(exported.code, 0, `export-layer exits 0${exported.code ? `: ${exported.stderr}` : ''}`);
  tt.equal(`sha256:${execFileSync('sha256sum', [out], { encoding: 'utf8' }).slice(0, 64)}`, first.diffId, 'the layer rebuilt from the cached scan is the archive, byte for byte');

  // The same bytes but one file's, the archive's size and mtime put back: only ctime tells.
  const reference = join(world.scratch, 'layer-times');
  execFileSync('touch', ['-r', layerTar, reference]);
  const bytes = execFileSync('cat', [layerTar]);
  // The archive was made before the first test rewrote the file: it holds the a's.
  const at = bytes.indexOf('a'.repeat(100));
  tt.ok(at > 0, 'the edited file is in the archive');
  bytes.fill('c', at, at + 100);
  execFileSync('dd', ['of=' + layerTar, 'conv=notrunc', 'status=none'], { input: bytes });
  execFileSync('touch', ['-r', reference, layerTar]);
  const changed = await add(tt, alice, layerTar, 'layer');
  tt.equal(changed.scanCache, 'miss', 'the rewritten archive is read again');
  tt.not(changed.diffId, first.diffId, 'a new diff ID');
  tt.not(changed.id, first.id, 'a new image');
  const r = await cli(alice, ['run', '--image', `${changed.id}:/mnt`, '--', 'head', '-c', '5', '/mnt/edited']);
  tt.equal(r.stdout, 'ccccc', 'the image holds the new content');
  const uncached = await add(tt, alice, layerTar, 'layer', ['--no-digest-cache']);
  tt.equal(uncached.id, changed.id, '--no-digest-cache reads it to the same image');
  tt.notOk('scanCache' in uncached, 'and says nothing of a cache');
});
