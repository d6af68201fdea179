// `mountgate image build` takes a short way (bin/mountgate hands it to
// src/cli/build.ts before commander loads): the command lines it reads must be
// read as commander reads them, every other one must reach the full CLI, and
// both ways must write the same image and refuse with the same words.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseBuildArguments } from '../../src/cli/build.js';
import { repoRoot } from '../helpers/paths.js';

t.test('the short way reads the options commander defines for image build, and nothing else', async (t) => {
  t.same(parseBuildArguments(['x.json', '-o', 'x.cfs']), { input: 'x.json', opts: { output: 'x.cfs' } });
  t.same(parseBuildArguments(['--output=x.cfs', '--from-dump', '--lenient', '-', '--min-version', '1', '--max-version=1']), {
    input: '-',
    opts: { output: 'x.cfs', fromDump: true, lenient: true, minVersion: '1', maxVersion: '1' },
  });
  t.same(parseBuildArguments(['x.json', '-o', '-']), { input: 'x.json', opts: { output: '-' } }, 'standard output');
  t.same(parseBuildArguments(['x.json', '-o', 'a', '-o', 'b']), { input: 'x.json', opts: { output: 'b' } }, 'the last one counts');
  for (const args of [[], ['x.json'], ['-o', 'x.cfs'], ['x.json', '-o'], ['a', 'b', '-o', 'x'], ['x.json', '-o', 'x', '--help'], ['x.json', '-h', '-o', 'x'], ['x', '-ox'], ['x', '-o', 'y', '--from-dump=1'], ['x', '-o', 'y', '--bogus']]) {
    t.equal(parseBuildArguments(args), undefined, `${JSON.stringify(args)} goes to the full CLI`);
  }
});

t.test('the short way and the full CLI write the same image and refuse alike', async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'mountgate-image-build-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  // Without tap's NODE_OPTIONS hooks, as a user runs it.
  const run = (entry: string, args: string[]) => spawnSync('env', ['-u', 'NODE_OPTIONS', process.execPath, join(repoRoot, entry), 'image', 'build', ...args], { encoding: 'latin1' });
  const short = (args: string[]) => run('bin/mountgate', args);
  const full = (args: string[]) => run('dist/src/cli/main.js', args);
  const digest = 'a'.repeat(64);
  writeFileSync(join(work, 'good.dump'), `/ 0 40755 2 0 0 0 0.0 - - - user.a=b\n/f 9 100644 1 0 0 0 0.0 ${digest.slice(0, 2)}/${digest.slice(2)} - ${digest}\n/s 1 120777 1 0 0 0 0.0 f - -\n`);
  writeFileSync(join(work, 'bad.dump'), '/ 0 40755 2 0 0 0 0.0 - - -\n/x 0 100644 0 0 0 0 0.0 - - -\n');
  for (const [name, args] of [
    ['from a dump', ['--from-dump', join(work, 'good.dump')]],
    ['at format 1', ['--from-dump', join(work, 'good.dump'), '--min-version', '1']],
  ] as const) {
    const a = short([...args, '-o', join(work, 'a.cfs')]);
    const b = full([...args, '-o', join(work, 'b.cfs')]);
    t.equal(a.status, 0, `${name}: ${a.stderr}`);
    t.equal(b.status, 0, `${name}: ${b.stderr}`);
    t.ok(readFileSync(join(work, 'a.cfs')).equals(readFileSync(join(work, 'b.cfs'))), `${name}: the same bytes`);
  }
  for (const args of [['--from-dump', join(work, 'bad.dump')], [join(work, 'bad.dump')], [join(work, 'absent.json')], ['--from-dump', join(work, 'good.dump'), '--min-version', 'x']]) {
    const a = short([...args, '-o', join(work, 'c.cfs')]);
    const b = full([...args, '-o', join(work, 'c.cfs')]);
    t.not(a.status, 0, `${args.join(' ')} is refused`);
    t.match(a.stderr, /^mountgate: \S/, 'with a sentence');
    t.same([a.status, a.stderr], [b.status, b.stderr], `${args.join(' ')}: the same exit code and message both ways`);
  }
  const help = short(['--help']);
  t.equal(help.status, 0);
  t.match(help.stdout, /Usage: mountgate image build/, '--help reaches the full CLI');
});
