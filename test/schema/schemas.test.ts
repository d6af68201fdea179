// Every schema has valid and invalid examples under test/schema/fixtures, and
// the output of `mountgate validate` is pinned for a few of them.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAndValidate, type SchemaKind } from '../../src/schema/validate.js';
import { repoRoot } from '../helpers/paths.js';

const fixtures = join(repoRoot, 'test', 'schema', 'fixtures');

for (const kind of readdirSync(fixtures) as SchemaKind[]) {
  for (const expect of ['valid', 'invalid'] as const) {
    for (const file of readdirSync(join(fixtures, kind, expect))) {
      t.test(`${kind}/${expect}/${file}`, async (tt) => {
        const result = parseAndValidate(kind, readFileSync(join(fixtures, kind, expect, file), 'utf8'));
        tt.equal(result.ok, expect === 'valid', `is ${expect}`);
        if (!result.ok) {
          tt.ok(result.issues.length > 0);
          for (const issue of result.issues) tt.match(issue.message, /\w+ \w+/, `a sentence for ${issue.pointer || '(document)'}`);
        }
      });
    }
  }
}

t.test('the generated TypeScript types are up to date with the schemas', async (tt) => {
  const r = spawnSync(process.execPath, [join(repoRoot, 'scripts', 'gen-types.mjs'), '--check'], { encoding: 'utf8' });
  tt.equal(r.status, 0, r.stderr || 'types.generated.ts matches schemas/');
});

function validateCli(args: string[]): { code: number; out: string } {
  const r = spawnSync(process.execPath, [join(repoRoot, 'bin', 'mountgate'), 'validate', ...args], { encoding: 'utf8', cwd: fixtures, env: { ...process.env, NODE_OPTIONS: '' } });
  return { code: r.status ?? -1, out: r.stdout + r.stderr };
}

t.test('mountgate validate: pinned output', async (tt) => {
  tt.same(validateCli(['bind-request/valid/swap.json']), { code: 0, out: 'bind-request/valid/swap.json: valid bind-request\n' });
  tt.same(validateCli(['bind-request/invalid/unknown-field.json']), {
    code: 3,
    out: 'bind-request/invalid/unknown-field.json: (document): unknown field "recursive": remove it (fields are checked strictly)\n',
  });
  tt.same(validateCli(['bind-request/invalid/negative-id.json']), { code: 3, out: 'bind-request/invalid/negative-id.json: /uidMap/0/from: must be >= 0\n' });
  tt.same(validateCli(['policy/invalid/unknown-method.json']), {
    code: 3,
    out: 'policy/invalid/unknown-method.json: /methods: unknown field "Reboot": remove it (fields are checked strictly)\n',
  });
  tt.same(validateCli(['../../manifest/fixtures/invalid/bad-digest.json']), {
    code: 3,
    out: '../../manifest/fixtures/invalid/bad-digest.json: /entries/1/digest: does not match the pattern ^[0-9a-f]{64}$\n',
  }, 'a manifest gets the checks AddImage makes');
  const json = validateCli(['--json', '--kind', 'policy', 'policy/invalid/zero-limit.json']);
  tt.equal(json.code, 3);
  tt.same(JSON.parse(json.out), { file: 'policy/invalid/zero-limit.json', kind: 'policy', valid: false, issues: [{ pointer: '/limits/concurrentRequests', message: 'must be >= 1' }] });
  const unknown = spawnSync('sh', ['-c', `echo '{}' | ${process.execPath} ${join(repoRoot, 'bin', 'mountgate')} validate -`], { encoding: 'utf8' });
  tt.equal(unknown.status, 2, 'a document whose schema cannot be told is a usage error');
  tt.match(unknown.stderr, /pass --kind/);
  void execFileSync;
});
