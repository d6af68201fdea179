// `mountgate image export-layer IMAGE N` gives back the layer's tar stream
// byte for byte: GNU tar archives in every format the reader takes (sparse
// files of each kind, long names, hardlinks, xattrs), imported by a real user
// through a real broker, exported, and compared with the original by sha256
// (the diff ID). A gzip layer exports as its uncompressed stream.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, type World } from '../helpers/world.js';
import { runAs } from '../helpers/run-as.js';
import { cliPath } from '../helpers/paths.js';
import { buildTree, makeTar, type TarFormat } from './fixtures.js';

let world: World;
let tree = '';
t.before(async () => {
  world = await createWorld({
    users: { alice: {} },
    policy: {
      version: 1,
      methods: Object.fromEntries(['AddImage', 'PutObjects', 'ProveObjects', 'MountImage', 'ListImages', 'RemoveImage'].map((m) => [m, { users: ['*'] }])),
      limits: { concurrentRequests: 4, requestsPerMinute: 100000 },
    },
  });
  tree = join(world.scratch, 'tree');
  buildTree(tree);
});
t.teardown(() => world?.teardown());

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/** Runs the CLI as alice; stdout is a file (export-layer refuses a terminal, and the tar is binary). */
const cli = (args: string[], out?: string) => {
  const argv = [process.execPath, cliPath, ...args];
  return out
    ? runAs(world.users.alice!, ['sh', '-c', 'exec "$@" > "$0"', out, ...argv], { busAddress: world.bus.address, env: { XDG_DATA_HOME: join(world.dirs.alice!, 'data') }, timeoutMs: 120_000 })
    : runAs(world.users.alice!, argv, { busAddress: world.bus.address, env: { XDG_DATA_HOME: join(world.dirs.alice!, 'data') }, timeoutMs: 120_000 });
};

for (const format of ['gnu', 'oldgnu', 'ustar', 'posix', 'posix-sparse-0.0', 'posix-sparse-0.1'] as TarFormat[]) {
  t.test(`a ${format} archive exports byte for byte`, async (t) => {
    const tar = join(world.scratch, `${format}.tar`);
    // ustar cannot hold names past 255 bytes: its tree has none.
    const from = format === 'ustar' ? join(world.scratch, 'short-tree') : tree;
    if (format === 'ustar') buildTree(from, false);
    makeTar(from, tar, format);
    chmodSync(tar, 0o644);
    const add = await cli(['image', 'add', tar, '--name', `l-${format}`, '--json']);
    t.equal(add.code, 0, `image add exits 0${add.code ? `: ${add.stderr}` : ''}`);
    const out = join(world.dirs.alice!, `${format}.out.tar`);
    const r = await cli(['image', 'export-layer', `l-${format}`, '0'], out);
    t.equal(r.code, 0, `export-layer exits 0${r.code ? `: ${r.stderr}` : ''}`);
    t.equal(sha256(readFileSync(out)), sha256(readFileSync(tar)), 'the same bytes as the archive imported (the diff ID)');
  });
}

t.test('a gzip layer exports as its uncompressed stream; errors say what is wrong', async (t) => {
  const tar = join(world.scratch, 'gz.tar');
  makeTar(tree, tar, 'posix');
  execFileSync('sh', ['-c', `gzip -k -c ${tar} > ${tar}.gz && chmod 644 ${tar}.gz`]);
  const add = await cli(['image', 'add', `${tar}.gz`, '--name', 'gz']);
  t.equal(add.code, 0, `image add exits 0${add.code ? `: ${add.stderr}` : ''}`);
  const out = join(world.dirs.alice!, 'gz.out.tar');
  const r = await cli(['image', 'export-layer', 'gz', '0'], out);
  t.equal(r.code, 0, `export-layer exits 0${r.code ? `: ${r.stderr}` : ''}`);
  t.equal(sha256(readFileSync(out)), sha256(readFileSync(tar)), 'the uncompressed archive, byte for byte');
  const beyond = await cli(['image', 'export-layer', 'gz', '1'], join(world.dirs.alice!, 'x.tar'));
  t.equal(beyond.code, 7, 'a layer the image does not have: not found');
  t.match(beyond.stderr, /has 1 layer\(s\) \(0\.\.0\), not 1/);
  const plain = await cli(['image', 'add', tree, '--name', 'dir']);
  t.equal(plain.code, 0);
  const noSplit = await cli(['image', 'export-layer', 'dir', '0'], join(world.dirs.alice!, 'y.tar'));
  t.equal(noSplit.code, 7, 'an image made from a directory has no layer');
  t.match(noSplit.stderr, /was not imported from a tarball or container image/);
});
