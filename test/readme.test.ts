// The first five minutes: README's demo and test commands are one command
// each, run as they are in a root shell (no sudo: a fresh Debian machine's
// root shell has none), name scripts that exist, and the test command is
// what CI runs; package.json's scripts name files that exist.
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './helpers/paths.js';

const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');

/** The indented command lines of a README section. */
function commands(heading: string): string[] {
  const start = readme.indexOf(`## ${heading}\n`);
  const end = readme.indexOf('\n## ', start + 1);
  return readme.slice(start, end < 0 ? undefined : end).split('\n').filter((l) => /^ {4}\S/.test(l)).map((l) => l.trim());
}

for (const [heading, script] of [['Run the demo', 'scripts/demo.sh'], ['Run the tests', 'scripts/test.sh']] as const) {
  t.test(`README "${heading}": one command, no sudo, a script that exists`, async (t) => {
    const cmds = commands(heading);
    t.same(cmds, [`bash ${script}`], `exactly one command: ${JSON.stringify(cmds)}`);
    t.ok(existsSync(join(repoRoot, script)), `${script} exists`);
  });
}

t.test('CI runs the README\'s test command', async (t) => {
  const ci = readFileSync(join(repoRoot, '.ci', 'run'), 'utf8').split('\n').filter((l) => l && !l.startsWith('#') && !/^(set|cd) /.test(l));
  t.same(ci, [commands('Run the tests')[0]], '.ci/run runs exactly that command');
});

t.test("package.json's scripts name files that exist", async (t) => {
  const scripts = (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
  for (const [name, cmd] of Object.entries(scripts)) {
    const m = /^bash (\S+)/.exec(cmd);
    if (m) t.ok(existsSync(join(repoRoot, m[1]!)), `npm run ${name}: ${m[1]} exists`);
  }
  t.equal(scripts.demo, 'bash scripts/demo.sh', 'npm run demo is the README\'s demo');
});
