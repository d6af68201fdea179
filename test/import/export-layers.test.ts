// export-layer of layers whose files later layers deleted or replaced: a
// three-layer docker-archive (layers made by GNU tar: layer 1 a small tree,
// layer 2 deletes a file (.wh.), replaces another and empties a directory
// (.wh..wh..opq), layer 3 deletes a whole directory) and its copy to an oci:
// layout by skopeo. Every layer exports to its diff ID byte for byte; the
// contents no later layer kept live in a hidden image, counted in the
// per-user limits, not listed, and gone with the image: nothing of either is
// left in the store afterwards.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { World } from '../helpers/world.js';
import { cliAs, importWorld } from './world.js';

let world: World;
const layers: string[] = [];
let archive = '';
let ociDir = '';
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Writes files (path -> content) under `root`. */
function files(root: string, spec: Record<string, string | Buffer>): void {
  for (const [p, content] of Object.entries(spec)) {
    mkdirSync(join(root, p, '..'), { recursive: true });
    writeFileSync(join(root, p), content);
  }
}

t.before(async () => {
  // Two images each: the flattened image and its hidden one are two.
  world = await importWorld(['alice', 'bob'], { maxImagesPerUser: 2 });
  const src = join(world.scratch, 'src');
  files(join(src, 'l1'), {
    'etc/hostname': 'base\n',
    'etc/gone.txt': 'deleted by layer 2\n',
    'etc/replaced.txt': 'the first version\n',
    'opaque/a.txt': 'emptied by layer 2\n',
    'opaque/sub/b.txt': 'also emptied\n',
    'usr/bin/tool': Buffer.alloc(70_000, 3),
    'usr/share/doc': 'removed with usr by layer 3\n',
  });
  files(join(src, 'l2'), {
    'etc/.wh.gone.txt': '',
    'etc/replaced.txt': 'the second version\n',
    'opaque/.wh..wh..opq': '',
    'opaque/new.txt': 'after the opaque marker\n',
    'etc/added.txt': 'new in layer 2\n',
  });
  files(join(src, 'l3'), { '.wh.usr': '', 'etc/last.txt': 'layer 3\n' });
  const out = join(world.scratch, 'docker');
  mkdirSync(out);
  const names: string[] = [];
  for (const l of ['l1', 'l2', 'l3']) {
    const tmp = join(world.scratch, `${l}.tar`);
    execFileSync('tar', ['--format=posix', '--sort=name', '--numeric-owner', '--owner=0', '--group=0', '--mtime=@1700000000', '-C', join(src, l), '-cf', tmp, '.']);
    const hex = sha256(readFileSync(tmp));
    execFileSync('cp', [tmp, join(out, `${hex}.tar`)]);
    layers.push(tmp);
    names.push(hex);
  }
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/sh'] }, rootfs: { type: 'layers', diff_ids: names.map((h) => `sha256:${h}`) } }));
  const configHex = sha256(config);
  writeFileSync(join(out, `${configHex}.json`), config);
  writeFileSync(join(out, 'manifest.json'), JSON.stringify([{ Config: `${configHex}.json`, RepoTags: ['localhost/layered:1'], Layers: names.map((h) => `${h}.tar`) }]));
  archive = join(world.scratch, 'layered.tar');
  execFileSync('tar', ['-C', out, '-cf', archive, '.']);
  ociDir = join(world.scratch, 'oci');
  execFileSync('skopeo', ['copy', '--quiet', `docker-archive:${archive}`, `oci:${ociDir}:v1`]);
  execFileSync('chmod', ['-R', 'a+rX', world.scratch]);
});
t.teardown(() => world?.teardown());


/** The image directories and object files in the broker's store. */
function storeContents(): { images: string[]; objects: number } {
  const state = world.broker.stateDir;
  const objectsDir = join(state, 'store', 'objects');
  const objects = existsSync(objectsDir) ? readdirSync(objectsDir).reduce((n, d) => n + readdirSync(join(objectsDir, d)).length, 0) : 0;
  return { images: readdirSync(join(state, 'images')), objects };
}

t.test('every layer of a docker-archive and of its oci: copy exports to its diff ID; the hidden image is counted, not listed, and removed with the image', async (t) => {
  const alice = cliAs(world, 'alice');
  const add = await alice(['image', 'add', `docker-archive:${archive}`, '--name', 'layered', '--json']);
  t.equal(add.code, 0, `image add exits 0${add.code ? `: ${add.stderr}` : ''}`);
  const summary = JSON.parse(add.stdout) as { id: string; kept?: string; layers: { diffId: string }[] };
  t.match(summary.kept, /^[0-9a-f]{64}$/, 'a hidden image keeps what the flattened image lacks');
  t.same(summary.layers.map((l) => l.diffId), layers.map((l) => `sha256:${sha256(readFileSync(l))}`));
  const ls = JSON.parse((await alice(['image', 'ls', '--json'])).stdout) as { id: string }[];
  t.same(ls.map((i) => i.id), [summary.id], 'the listing shows one image');
  t.same(storeContents().images.sort(), [summary.id, summary.kept!].sort(), 'the store holds the image and its hidden one');

  for (let k = 0; k < 3; k++) {
    const out = join(world.dirs.alice!, `layer${k}.tar`);
    const r = await alice(['image', 'export-layer', 'layered', String(k)], out);
    t.equal(r.code, 0, `layer ${k} exports${r.code ? `: ${r.stderr}` : ''}`);
    t.equal(sha256(readFileSync(out)), sha256(readFileSync(layers[k]!)), `layer ${k}: byte for byte, its diff ID`);
  }

  // The limit (two images) counts the hidden one: a third is refused, and says why.
  const third = await alice(['image', 'add', join(world.scratch, 'src', 'l3')]);
  t.equal(third.code, 6, 'a third image exceeds the limit');
  t.match(third.stderr, /you have 2 images \(1 of them hidden, kept for layers of your images\), the limit is 2/);

  // The same image from skopeo's oci: layout is the same two images: allowed, nothing new.
  const again = await alice(['image', 'add', `oci:${ociDir}:v1`, '--name', 'layered', '--json']);
  t.equal(again.code, 0, `the oci: copy imports${again.code ? `: ${again.stderr}` : ''}`);
  const second = JSON.parse(again.stdout) as { id: string; kept?: string; uploaded: { objects: number } };
  t.same([second.id, second.kept, second.uploaded.objects], [summary.id, summary.kept, 0], 'the same images, nothing uploaded');
  for (let k = 0; k < 3; k++) {
    const out = join(world.dirs.alice!, `oci-layer${k}.tar`);
    const r = await alice(['image', 'export-layer', 'layered', String(k)], out);
    t.equal(r.code, 0, `oci: layer ${k} exports${r.code ? `: ${r.stderr}` : ''}`);
    t.equal(sha256(readFileSync(out)), sha256(readFileSync(layers[k]!)), `oci: layer ${k}: its diff ID`);
  }

  const mark = world.broker.audit.length;
  const rm = await alice(['image', 'rm', 'layered']);
  t.equal(rm.code, 0, `image rm exits 0${rm.code ? `: ${rm.stderr}` : ''}`);
  // The object files go after the call, off the event loop: the front says when.
  await world.broker.waitFor((l) => l.event === 'store' && world.broker.audit.indexOf(l) >= mark);
  t.same(storeContents(), { images: [], objects: 0 }, 'no image, hidden or not, and no object is left in the store');
});

t.test('an import whose hidden image does not fit the limit registers nothing', async (t) => {
  const bob = cliAs(world, 'bob');
  const first = await bob(['image', 'add', join(world.scratch, 'src', 'l3'), '--name', 'small']);
  t.equal(first.code, 0, `bob's first image${first.code ? `: ${first.stderr}` : ''}`);
  const r = await bob(['image', 'add', `docker-archive:${archive}`, '--name', 'layered']);
  t.equal(r.code, 6, 'the flattened image fits, its hidden one does not: refused');
  t.match(r.stderr, /quota exceeded: you have 2 images, the limit is 2/);
  const ls = JSON.parse((await bob(['image', 'ls', '--json'])).stdout) as { name?: string }[];
  t.same(ls.map((i) => i.name), ['small'], 'the flattened image was removed again');
  t.equal(storeContents().images.length, 1, 'only bob\'s first image is in the store');
  await bob(['image', 'rm', 'small']);
});
