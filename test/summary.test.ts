// The closing line of the run cannot lie: summary.mjs on canned TAP text in
// the shape `tap --reporter=tap` prints (taken from real runs of throwaway
// files that crashed, were killed, timed out or never ran).
import t from 'tap';
import { report, summarize } from './summary.mjs';

const passing = (file: string, points = 1) => [
  `# Subtest: ${file}`,
  ...Array.from({ length: points }, (_, k) => [`    # Subtest: test ${k + 1}`, '        ok 1 - fine', '        1..1', `    ok ${k + 1} - test ${k + 1} # time=2.1ms`, '    ']).flat(),
  `    1..${points}`,
  '    # time=9.5ms',
  `ok 1 - ${file} # time=9.5ms`,
  '',
];

const fileFailure = (file: string, yaml: string[]) => [
  `not ok 2 - ${file} # time=875.5ms`,
  '  ---',
  '  stdio: inherit',
  `  externalID: ${file}`,
  '  args:',
  `    - ${file}`,
  ...yaml.map((l) => `  ${l}`),
  '  ...',
  '',
];

const onePassThen = (file: string, end: string[]) => [
  `# Subtest: ${file}`,
  '    # Subtest: one',
  '        ok 1 - fine',
  '        1..1',
  '    ok 1 - one # time=2.5ms',
  '    ',
  ...end,
];

const run = (...files: string[][]) => ['TAP version 14', `1..${files.length}`, ...files.flat()].join('\n');

t.test('clean files: their points are counted, skips apart', async (tt) => {
  const text = run(passing('test/a.test.ts', 3), [
    '# Subtest: test/b.test.ts',
    '    ok 1 - fine',
    '    ok 2 - skipper # SKIP no reason',
    '    ok 3 - todo # TODO',
    '    1..3',
    'ok 2 - test/b.test.ts # time=9.5ms',
  ]);
  const r = summarize(text, ['test/a.test.ts', './test/b.test.ts']);
  tt.same(r, { passed: 4, failed: 0, skipped: 2, problems: [], failures: [] });
  tt.same(report(r), ['4 passed, 0 failed, 2 skipped']);
});

t.test('a file SIGKILLed after one passing point is a failure, named', async (tt) => {
  const text = run(onePassThen('test/kill.test.ts', ['    # test count(1) != plan(null)', ...fileFailure('test/kill.test.ts', ['exitCode: null', 'signal: SIGKILL'])]));
  const r = summarize(text, ['test/kill.test.ts']);
  tt.equal(r.passed, 1);
  tt.equal(r.failed, 1, 'the kill is a failure although no point failed');
  tt.same(r.problems, ['test/kill.test.ts: killed by SIGKILL (1 passed, 0 failed test point(s))']);
  tt.same(report(r).at(-1), '1 passed, 1 failed', 'the last line stays plain');
});

t.test('a failed test point is named at the end, with its first failed assertion', async (tt) => {
  const text = run(onePassThen('test/fail.test.ts', [
    '    # Subtest: two',
    '        ok 1 - fine',
    '        not ok 2 - the broker answers # time=3ms',
    '          ---',
    '          at: test/fail.test.ts:9:3',
    '          ...',
    '        not ok 3 - a later one',
    '        1..3',
    '    not ok 2 - two # time=212.9ms',
    '    # Subtest: three',
    '        not ok 1',
    '        1..1',
    '    not ok 3 - three',
    '    1..3',
    ...fileFailure('test/fail.test.ts', ['exitCode: 1', 'signal: null']),
  ]));
  const r = summarize(text, ['test/fail.test.ts']);
  tt.same([r.passed, r.failed], [1, 2]);
  tt.same(r.failures, ['test/fail.test.ts: two (the broker answers)', 'test/fail.test.ts: three ((unnamed))']);
  tt.same(r.problems, [], 'a file whose failures are points is not also unclean');
  tt.same(report(r), ['# failed: test/fail.test.ts: two (the broker answers)', '# failed: test/fail.test.ts: three ((unnamed))', '1 passed, 2 failed']);
});

t.test('a file that exits with a test pending is a failure beyond the pending test', async (tt) => {
  const text = run(onePassThen('test/exit.test.ts', [
    '    # Subtest: two',
    '        not ok 1 - test unfinished',
    '          ---',
    '          test: two',
    '          ...',
    '        1..1',
    '    not ok 2 - two # time=212.9ms',
    '    1..2',
    ...fileFailure('test/exit.test.ts', ['exitCode: 1', 'signal: null']),
  ]));
  const r = summarize(text, ['test/exit.test.ts']);
  tt.same([r.passed, r.failed], [1, 2]);
  tt.same(r.problems, ['test/exit.test.ts: exited before its tests finished (1 passed, 1 failed test point(s))']);
});

t.test('a file that exits non-zero with every point passed is a failure', async (tt) => {
  const text = run(onePassThen('test/late.test.ts', ['    1..1', ...fileFailure('test/late.test.ts', ['exitCode: 3', 'signal: null'])]));
  const r = summarize(text, ['test/late.test.ts']);
  tt.same([r.passed, r.failed], [1, 1]);
  tt.same(r.problems, ['test/late.test.ts: failed outside any test point (exit code 3) (1 passed, 0 failed test point(s))']);
});

t.test("a timed-out file is a failure, also when tap's point names no file", async (tt) => {
  const text = run(onePassThen('test/slow.test.ts', ['    1..1', "{ message: 'timeout!', test: 'TAP' }", 'not ok 1 - timeout!', '  ---', '  expired: test/slow.test.ts', '  ...']));
  const r = summarize(text, ['test/slow.test.ts']);
  tt.same([r.passed, r.failed], [1, 1]);
  tt.same(r.problems, ['test/slow.test.ts: timed out (1 passed, 0 failed test point(s))']);
  const bare = summarize(run(['not ok 1 - timeout!', '  ---', '  expired: test/slow.test.ts', '  ...']), ['test/slow.test.ts']);
  tt.same(bare.problems, ['test/slow.test.ts: timed out (0 passed, 0 failed test point(s))'], 'counted once, under its file');
});

t.test('a file that fails to load, or reports no point, is a failure', async (tt) => {
  const crashed = run(['# Subtest: test/load.test.ts', '    1..0 # no tests found', ...fileFailure('test/load.test.ts', ['exitCode: 1', 'signal: null'])]);
  tt.same(summarize(crashed, ['test/load.test.ts']).problems, ['test/load.test.ts: failed outside any test point (exit code 1) (0 passed, 0 failed test point(s))']);
  const empty = run(['# Subtest: test/empty.test.ts', '    1..0', 'ok 1 - test/empty.test.ts']);
  tt.same(summarize(empty, ['test/empty.test.ts']).failed, 1, 'no point at all proves nothing');
  const skipAll = run(['# Subtest: test/skip.test.ts', '    1..0 # SKIP no kernel support', 'ok 1 - test/skip.test.ts # SKIP no kernel support']);
  tt.same(summarize(skipAll, ['test/skip.test.ts']), { passed: 0, failed: 0, skipped: 1, problems: [], failures: [] }, 'a file skipped as a whole is a skip');
});

t.test('an expected file that produced no result is a failure, named', async (tt) => {
  const r = summarize(run(passing('test/a.test.ts')), ['test/a.test.ts', 'test/never.test.ts']);
  tt.same([r.passed, r.failed], [1, 1]);
  tt.same(r.problems, ['test/never.test.ts: produced no result']);
});

t.test('a log cut off in the middle of a file (tap itself died) is a failure', async (tt) => {
  const text = run(passing('test/a.test.ts'), onePassThen('test/b.test.ts', []));
  const r = summarize(text, ['test/a.test.ts', 'test/b.test.ts', 'test/c.test.ts']);
  tt.same([r.passed, r.failed], [2, 2]);
  tt.same(r.problems, ['test/b.test.ts: never reached its end (1 passed, 0 failed test point(s))', 'test/c.test.ts: produced no result']);
});

t.test('an ordinary failing point is counted once, and its file is not called unclean', async (tt) => {
  const text = run([
    '# Subtest: test/f.test.ts',
    '    ok 1 - fine',
    '    not ok 2 - wrong',
    '      ---',
    '      found: 1',
    '      ...',
    '    1..2',
    ...fileFailure('test/f.test.ts', ['exitCode: 1', 'signal: null']),
  ]);
  tt.same(summarize(text, ['test/f.test.ts']), { passed: 1, failed: 1, skipped: 0, problems: [], failures: ['test/f.test.ts: wrong'] });
});
