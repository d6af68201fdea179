// What the client keeps beside an imported image (src/import/sidecar.ts) is
// kept per name, not per image id: imports that flatten to the same files
// share an id, yet each name's layers and config are its own. The broker
// keeps every name a user gives an image, so a second name for the same
// files keeps the first, each with its record; importing again under a name
// replaces its record; `image rm NAME` drops that name's record alone, and
// removing the image leaves nothing of either behind.
// Archives made by GNU tar (docker-archive layouts written here) and by
// podman (`podman import` + `podman save`, as root in a private store),
// imported by a real user through a real broker.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { World } from '../helpers/world.js';
import type { RunResult } from '../helpers/run-as.js';
import { cliAs, importWorld } from './world.js';

let world: World;
let alice: (args: string[], out?: string) => Promise<RunResult>;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const mtime = '@1700000000';
/** Layer tarballs by name (GNU tar), and the docker-archives made of them. */
const tars: Record<string, string> = {};
let oneLayer = '';
let twoLayers = '';

/** Writes files (path -> content) under `root`. */
function files(root: string, spec: Record<string, string | Buffer>): void {
  for (const [p, content] of Object.entries(spec)) {
    mkdirSync(join(root, p, '..'), { recursive: true });
    writeFileSync(join(root, p), content);
  }
}

/** A docker-archive (the layout `podman save` writes) of layer tarballs, with `config` as the image config. */
function dockerArchive(name: string, layers: string[], config: Record<string, unknown>): string {
  const out = join(world.scratch, `${name}.d`);
  mkdirSync(out);
  const hexes = layers.map((l) => {
    const hex = sha256(readFileSync(l));
    copyFileSync(l, join(out, `${hex}.tar`));
    return hex;
  });
  const cfg = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config, rootfs: { type: 'layers', diff_ids: hexes.map((h) => `sha256:${h}`) } }));
  writeFileSync(join(out, `${sha256(cfg)}.json`), cfg);
  writeFileSync(join(out, 'manifest.json'), JSON.stringify([{ Config: `${sha256(cfg)}.json`, RepoTags: [`localhost/${name}:1`], Layers: hexes.map((h) => `${h}.tar`) }]));
  const archive = join(world.scratch, `${name}.tar`);
  execFileSync('tar', ['-C', out, '-cf', archive, '.']);
  return archive;
}

t.before(async () => {
  world = await importWorld(['alice']);
  alice = cliAs(world, 'alice');
  // The same files as one layer, and as two (what the second adds does not touch the first's).
  const src = join(world.scratch, 'src');
  files(join(src, 'all'), { 'etc/hostname': 'same\n', 'usr/share/doc.txt': 'doc\n', 'opt/tool': Buffer.alloc(70_000, 7) });
  files(join(src, 'lower'), { 'etc/hostname': 'same\n', 'usr/share/doc.txt': 'doc\n' });
  files(join(src, 'upper'), { 'opt/tool': Buffer.alloc(70_000, 7) });
  for (const l of ['all', 'lower', 'upper']) {
    tars[l] = join(world.scratch, `${l}.tar`);
    execFileSync('tar', ['--format=gnu', '--sort=name', '--numeric-owner', '--owner=0', '--group=0', `--mtime=${mtime}`, '-C', join(src, l), '-cf', tars[l]!, '.']);
  }
  oneLayer = dockerArchive('one', [tars.all!], { Cmd: ['/one'] });
  twoLayers = dockerArchive('two', [tars.lower!, tars.upper!], { Cmd: ['/two'] });
  execFileSync('chmod', ['-R', 'a+rX', world.scratch]);
});
t.teardown(() => world?.teardown());

const data = () => join(world.dirs.alice!, 'data', 'mountgate', 'images');
/** What the data directory holds (the lock file aside): names/ and anything else. */
function kept(): { names: string[]; other: string[] } {
  if (!existsSync(data())) return { names: [], other: [] };
  const names = existsSync(join(data(), 'names')) ? readdirSync(join(data(), 'names')).sort() : [];
  return { names, other: readdirSync(data()).filter((f) => f !== 'names' && f !== 'lock').sort() };
}
const listed = async () => (JSON.parse((await alice(['image', 'ls', '--json'])).stdout) as { id: string; names: string[] }[]).map((i) => i.names);

/** Asserts that `image export-layer REF k` writes exactly the tarball `tar`. */
async function exportsAs(t: Tap.Test, ref: string, k: number, tar: string): Promise<void> {
  const out = join(world.dirs.alice!, 'layer.out');
  const r = await alice(['image', 'export-layer', ref, String(k)], out);
  t.equal(r.code, 0, `export-layer ${ref} ${k} exits 0${r.code ? `: ${r.stderr}` : ''}`);
  t.equal(sha256(readFileSync(out)), sha256(readFileSync(tar)), `layer ${k} of ${ref}: the diff ID of ${tar.split('/').pop()}`);
  rmSync(out, { force: true });
}

async function add(t: Tap.Test, args: string[]): Promise<{ id: string; layers?: { diffId: string }[] }> {
  const r = await alice(['image', 'add', ...args, '--json']);
  t.equal(r.code, 0, `image add ${args.join(' ')} exits 0${r.code ? `: ${r.stderr}` : ''}`);
  t.notMatch(r.stderr, /warning/, 'no warning');
  return JSON.parse(r.stdout) as { id: string };
}

t.test('one layer and two layers of the same files: one image id, yet each name exports its own layers', async (t) => {
  const one = await add(t, [`docker-archive:${oneLayer}`, '--name', 'one']);
  await exportsAs(t, 'one', 0, tars.all!);
  const two = await add(t, [`docker-archive:${twoLayers}`, '--name', 'two']);
  t.equal(two.id, one.id, 'the same flattened tree: the same image id');
  t.same(await listed(), [['one', 'two']], 'the broker keeps both names of the image');
  await exportsAs(t, 'two', 0, tars.lower!);
  await exportsAs(t, 'two', 1, tars.upper!);
  await exportsAs(t, 'one', 0, tars.all!);
  const beyondOne = await alice(['image', 'export-layer', 'one', '1'], '/dev/null');
  t.match(beyondOne.stderr, /has 1 layer\(s\)/, "the first name keeps its own single layer");
  await exportsAs(t, two.id, 1, tars.upper!);
  t.same(kept().names.filter((f) => f.endsWith('.json')), ['one.json', 'two.json'], 'a record per name');
  t.equal(kept().names.filter((f) => f.endsWith('.layers')).length, 2, 'and layers per name');

  // Imported again under the first name: its record is replaced, the other's stays.
  await add(t, [`docker-archive:${oneLayer}`, '--name', 'one']);
  await exportsAs(t, 'one', 0, tars.all!);
  await exportsAs(t, 'two', 1, tars.upper!);

  const rm = await alice(['image', 'rm', 'one']);
  t.equal(rm.code, 0, `image rm one exits 0${rm.code ? `: ${rm.stderr}` : ''}`);
  t.same(await listed(), [['two']], 'by name, only that name went');
  t.same(kept().names.filter((f) => f.endsWith('.json')), ['two.json'], "and only that name's record");
  await exportsAs(t, 'two', 0, tars.lower!);
  const gone = await alice(['image', 'export-layer', 'one', '0'], '/dev/null');
  t.equal(gone.code, 7, 'the removed name names nothing');
  t.match(gone.stderr, /you have no image one/);
  const rmLast = await alice(['image', 'rm', 'two']);
  t.equal(rmLast.code, 0, `image rm two exits 0${rmLast.code ? `: ${rmLast.stderr}` : ''}`);
  t.same(await listed(), [], 'its last name removed, the image went');
  t.same(kept(), { names: [], other: [] }, 'image rm leaves no record and no layer directory behind');
});

t.test('two imports of one name at once: the record that stays is whole (its layers are its own)', async (t) => {
  const [a, b] = await Promise.all([alice(['image', 'add', `docker-archive:${oneLayer}`, '--name', 'raced']), alice(['image', 'add', `docker-archive:${twoLayers}`, '--name', 'raced'])]);
  t.same([a.code, b.code], [0, 0], `both imports exit 0: ${a.stderr}${b.stderr}`);
  const record = JSON.parse(readFileSync(join(data(), 'names', 'raced.json'), 'utf8')) as { layers: unknown[] };
  const expected = record.layers.length === 1 ? [tars.all!] : [tars.lower!, tars.upper!];
  for (const [k, tar] of expected.entries()) await exportsAs(t, 'raced', k, tar);
  t.equal(kept().names.length, 2, 'one record and one layer directory');
  await alice(['image', 'rm', 'raced']);
  t.same(kept(), { names: [], other: [] }, 'nothing left');
});

t.test('names that are no file names are encoded; a record from before names is read for its image and removed with it', async (t) => {
  const odd = 'docker.io/library/x:1.0';
  const up = '../../escape';
  await add(t, [tars.lower!, '--name', odd]);
  await add(t, [tars.upper!, '--name', up]);
  t.same(kept().names.filter((f) => f.endsWith('.json')), ['%2E%2E%2F%2E%2E%2Fescape.json', 'docker%2Eio%2Flibrary%2Fx%3A1%2E0.json'], 'each name a file of its own in names/');
  t.same(kept().other, [], 'nothing outside names/');
  t.notOk(existsSync(join(world.dirs.alice!, 'data', 'mountgate', 'escape.json')), 'no record escaped the directory');
  await exportsAs(t, odd, 0, tars.lower!);
  await exportsAs(t, up, 0, tars.upper!);

  // As a client from before names kept it: ID.json and ID.layers/, no name in the record.
  const [id] = (JSON.parse((await alice(['image', 'ls', '--json'])).stdout) as { id: string; name?: string }[]).filter((i) => i.name === odd).map((i) => i.id);
  const key = 'docker%2Eio%2Flibrary%2Fx%3A1%2E0';
  const record = JSON.parse(readFileSync(join(data(), 'names', `${key}.json`), 'utf8')) as { source: string; layers: unknown[]; layerDir: string };
  writeFileSync(join(data(), `${id}.json`), JSON.stringify({ source: record.source, layers: record.layers }));
  renameSync(join(data(), 'names', record.layerDir), join(data(), `${id}.layers`));
  rmSync(join(data(), 'names', `${key}.json`));
  execFileSync('chown', ['-R', `${world.users.alice!.uid}:${world.users.alice!.gid}`, data()]);
  await exportsAs(t, odd, 0, tars.lower!);
  await exportsAs(t, id!, 0, tars.lower!);

  const rmUp = await alice(['image', 'rm', up]);
  t.equal(rmUp.code, 0, `image rm exits 0${rmUp.code ? `: ${rmUp.stderr}` : ''}`);
  t.same(kept(), { names: [], other: [`${id}.json`, `${id}.layers`] }, 'the removed image\'s record is gone; the other image keeps its own');
  await exportsAs(t, odd, 0, tars.lower!);
  const rm = await alice(['image', 'rm', odd]);
  t.equal(rm.code, 0, `image rm exits 0${rm.code ? `: ${rm.stderr}` : ''}`);
  t.same(kept(), { names: [], other: [] }, 'the legacy record is gone with its image');
});

/** A busybox root filesystem (owned by root, every time at `mtime`) and its tarball. */
function busyboxRoot(): { tree: string; tar: string } {
  const tree = join(world.scratch, 'bbroot');
  for (const d of ['bin', 'etc', 'tmp']) mkdirSync(join(tree, d), { recursive: true });
  copyFileSync('/bin/busybox', join(tree, 'bin/busybox'));
  chmodSync(join(tree, 'bin/busybox'), 0o755);
  for (const tool of ['sh', 'echo']) symlinkSync('busybox', join(tree, 'bin', tool));
  writeFileSync(join(tree, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  execFileSync('find', [tree, '-exec', 'touch', '-h', '-d', mtime, '{}', '+']);
  const tar = join(world.scratch, 'bbroot.tar');
  execFileSync('tar', ['--format=gnu', '--sort=name', '--numeric-owner', '-C', tree, '-cf', tar, '.']);
  chmodSync(tar, 0o644);
  return { tree, tar };
}

/** `podman import` of `tar` with config changes (Dockerfile lines), then `podman save`: a docker-archive. */
function podmanSaved(name: string, tar: string, changes: string[]): string {
  const store = join(world.scratch, `podman-${name}`);
  const podman = (args: string[]) => execFileSync('podman', ['--root', join(store, 'storage'), '--runroot', join(store, 'run'), '--storage-driver', 'vfs', '--events-backend', 'file', '--cgroup-manager', 'cgroupfs', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  podman(['import', ...changes.flatMap((c) => ['--change', c]), tar, `localhost/${name}:1`]);
  const saved = join(world.scratch, `${name}-saved.tar`);
  podman(['save', '-o', saved, `localhost/${name}:1`]);
  podman(['rmi', '-a', '-f']);
  rmSync(store, { recursive: true, force: true });
  chmodSync(saved, 0o644);
  return saved;
}

t.test('run --image NAME follows the config its own import kept: podman images, a tarball and a directory of the same files', async (t) => {
  const root = busyboxRoot();
  const first = podmanSaved('first', root.tar, ['CMD ["/bin/sh", "-c", "echo $WHO"]', 'ENV WHO=first']);
  const second = podmanSaved('second', root.tar, ['CMD ["/bin/sh", "-c", "echo $WHO $WHO"]', 'ENV WHO=second']);
  const run = (ref: string) => alice(['run', '--image', ref]);

  const a = await add(t, [`docker-archive:${first}`, '--name', 'first']);
  t.equal((await run('first')).stdout, 'first\n', 'the first image\'s Cmd and Env');
  const b = await add(t, [`docker-archive:${second}`, '--name', 'second']);
  t.equal(b.id, a.id, 'the same files, another config: the same image id');
  const r2 = await run('second');
  t.equal(r2.stdout, 'second second\n', `the second image's own Cmd and Env${r2.code ? `: ${r2.stderr}` : ''}`);
  const r1 = await run('first');
  t.equal(r1.stdout, 'first\n', `the first name stays, with its own Cmd and Env${r1.code ? `: ${r1.stderr}` : ''}`);
  t.same(await listed(), [['first', 'second']], 'one image, both names');

  const plain = await add(t, [root.tar, '--name', 'plain']);
  t.equal(plain.id, a.id, 'the tarball podman imported: the same image id');
  const r3 = await run('plain');
  t.equal(r3.code, 2, 'a tarball has no config: run needs a command');
  t.match(r3.stderr, /the image has no config/);
  t.equal((await alice(['run', '--image', 'plain', '--', '/bin/echo', 'given'])).stdout, 'given\n');

  t.equal((await run('first')).stdout, 'first\n', 'a third name for the image leaves the first its config');
  await add(t, [`docker-archive:${first}`, '--name', 'first']);
  t.equal((await run('first')).stdout, 'first\n', 'imported again under its name: its config again');
  t.equal((await run('second')).stdout, 'second second\n', 'and the second keeps its own');

  // The same files added from a directory: the name then means an image without a config.
  const dir = join(world.dirs.alice!, 'bbroot');
  execFileSync('cp', ['-a', root.tree, dir]);
  execFileSync('chown', ['-hR', `${world.users.alice!.uid}:${world.users.alice!.gid}`, dir]);
  const fromDir = await add(t, [dir, '--name', 'fromdir']);
  t.equal(fromDir.id, a.id, 'the directory is the same tree');
  const r4 = await run('fromdir');
  t.equal(r4.code, 2, 'added from a directory: no config is kept for it, none is used');
  t.match(r4.stderr, /the image has no config/);
  t.match((await alice(['image', 'export-layer', 'fromdir', '0'], '/dev/null')).stderr, /was not imported from a tarball or container image here/, 'nor any layer');
  t.same(kept().names.filter((f) => f.endsWith('.json')), ['first.json', 'plain.json', 'second.json'], "the directory's name keeps no record; the other names keep theirs");
  t.equal((await run('second')).stdout, 'second second\n', 'the second name still runs its own config');

  const rmSecond = await alice(['image', 'rm', 'second']);
  t.equal(rmSecond.code, 0, `image rm second exits 0${rmSecond.code ? `: ${rmSecond.stderr}` : ''}`);
  t.equal((await run('second')).code, 7, 'the removed name names nothing');
  t.equal((await run('first')).stdout, 'first\n', 'the others are untouched');
  t.same(await listed(), [['first', 'fromdir', 'plain']], 'the image stays with its other names');
  await alice(['image', 'rm', a.id]);
  t.same(await listed(), [], 'removed by id: no image left, whatever its names');
  t.same(kept(), { names: [], other: [] }, 'nothing left in the data directory');
});
