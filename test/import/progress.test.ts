// Progress of `image add` through the CLI, as a user against a real broker:
// with --json, JSON events on standard error whose last read event covers the
// whole archive (its size on disk, compressed) or the whole directory (its
// file contents, totalled by the walk before the import), and whose upload
// events end with every object the broker asked for; without --json and
// without a terminal, not a byte on standard error; on a terminal (a pty
// from script(1)), the bar.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { World } from '../helpers/world.js';
import { runAs } from '../helpers/run-as.js';
import { cliPath } from '../helpers/paths.js';
import { cliAs, dataHome, importWorld } from './world.js';

let world: World;
let tree = '';
let archive = '';
t.before(async () => {
  world = await importWorld(['alice']);
  tree = join(world.scratch, 'tree');
  for (let k = 0; k < 40; k++) {
    mkdirSync(join(tree, `d${k % 4}`), { recursive: true });
    writeFileSync(join(tree, `d${k % 4}`, `f${k}`), randomBytes(20_000 + k));
  }
  archive = join(world.scratch, 'tree.tar.zst');
  execFileSync('sh', ['-c', `tar -C ${tree} -cf - . | zstd -q > ${archive}`]);
  execFileSync('chmod', ['-R', 'a+rX', world.scratch]);
});
t.teardown(() => world?.teardown());

const cli = (args: string[]) => cliAs(world, 'alice')(args);
const events = (stderr: string) => stderr.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, number | string | boolean>);

t.test('--json: read events up to the archive\'s size, upload events up to every object asked for', async (t) => {
  const r = await cli(['image', 'add', archive, '--name', 'tar', '--json']);
  t.equal(r.code, 0, `image add exits 0${r.code ? `: ${r.stderr}` : ''}`);
  const size = statSync(archive).size;
  const all = events(r.stderr);
  const reads = all.filter((e) => e.event === 'read');
  t.ok(reads.length >= 2, `read events (${reads.length})`);
  t.match(reads[0], { totalBytes: size, elapsedSeconds: Number }, 'the total is known from the start: the file\'s size');
  t.match(reads.at(-1), { event: 'read', entries: 45, bytes: size, totalBytes: size, done: true, rate: Number }, 'the last: every entry (40 files, 4 directories and the root) and every byte of the compressed file');
  const uploads = all.filter((e) => e.event === 'upload');
  t.match(uploads.at(-1), { objects: 40, totalObjects: 40, done: true }, 'the upload ends with all 40 objects');
  t.equal(uploads.at(-1)!.bytes, uploads.at(-1)!.totalBytes);
  t.ok(all.every((e) => e.event === 'read' || e.event === 'upload'), 'nothing but events on standard error');
  t.match(JSON.parse(r.stdout), { id: String }, 'the summary on standard output, as before');
});

t.test('--json for a directory: the walk before the import gives the total', async (t) => {
  const r = await cli(['image', 'add', tree, '--name', 'dir', '--json']);
  t.equal(r.code, 0, `image add exits 0${r.code ? `: ${r.stderr}` : ''}`);
  const contents = Array.from({ length: 40 }, (_, k) => 20_000 + k).reduce((a, b) => a + b, 0);
  const reads = events(r.stderr).filter((e) => e.event === 'read');
  t.match(reads.at(-1), { entries: 45, bytes: contents, totalBytes: contents, done: true }, 'every byte of the contents hashed, of a known total');
  t.same(events(r.stderr).filter((e) => e.event === 'upload'), [], 'the same contents as the archive: nothing to upload, no upload events');
});

t.test('no terminal and no --json: nothing on standard error', async (t) => {
  const again = join(world.scratch, 'quiet.tar');
  writeFileSync(join(tree, 'd0', 'new'), randomBytes(5000));
  execFileSync('tar', ['-C', tree, '-cf', again, '.']);
  execFileSync('chmod', ['a+r', again]);
  const r = await cli(['image', 'add', again, '--name', 'quiet']);
  t.equal(r.code, 0, `image add exits 0${r.code ? `: ${r.stderr}` : ''}`);
  t.equal(r.stderr, '', 'quiet');
  t.match(r.stdout, /^[0-9a-f]{64}\n$/, 'only the id');
  const d = await cli(['image', 'add', tree, '--name', 'quiet-dir']);
  t.equal(d.code, 0);
  t.equal(d.stderr, '', 'a directory too');
});

t.test('on a terminal: the bar', async (t) => {
  // A terminal of 200 columns, so that the whole line fits.
  const cmd = `stty cols 200 && exec ${[process.execPath, cliPath, 'image', 'add', archive, '--name', 'tty'].map((a) => `'${a}'`).join(' ')}`;
  // script(1) gives the command a pty: its output (the bar included) comes back on script's standard output.
  const r = await runAs(world.users.alice!, ['script', '-qefc', cmd, '/dev/null'], { busAddress: world.bus.address, env: dataHome(world, 'alice'), timeoutMs: 120_000 });
  t.equal(r.code, 0, `exits 0${r.code ? `: ${r.stdout}${r.stderr}` : ''}`);
  t.match(r.stdout, /\rreading    \[#{20}\] 100%  45 entries  [\d.]+\/[\d.]+ MiB  [\d.]+ MiB\/s  in 0:0\d/, 'the read phase\'s bar, full at its end');
});
