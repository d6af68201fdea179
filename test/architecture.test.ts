// "Pure decisions, thin effects", checked rather than hoped for: the pure
// rooms (policy, composefs format and writer, manifests, fs-verity digests)
// import no module that performs I/O, and only src/sys calls into the kernel.
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { repoRoot } from './helpers/paths.js';

const src = join(repoRoot, 'src');
const pureRooms = ['policy', 'composefs', 'manifest', 'verity'];
/** Reads the manifest schema for its error messages: the one sanctioned read. */
const exceptions = new Set(['manifest/load.ts']);
const effectful = [/^node:(fs|child_process|net|dgram|worker_threads|os|process)/, /^koffi$/, /^dbus-next$/, /\/(sys|broker|client|store|cli|bus)\//];

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

/** Module specifiers of value imports (type-only imports carry no effect). */
function valueImports(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/^import\s+(?!type\s)[^;]*?from\s+'([^']+)'/gms)) out.push(m[1]!);
  for (const m of text.matchAll(/^import\s+'([^']+)'/gm)) out.push(m[1]!);
  for (const m of text.matchAll(/\brequire\('([^']+)'\)/g)) out.push(m[1]!);
  return out;
}

for (const room of pureRooms) {
  t.test(`src/${room} imports nothing that performs effects`, async (tt) => {
    for (const file of files(join(src, room))) {
      const name = relative(src, file);
      if (exceptions.has(name)) continue;
      const bad = valueImports(readFileSync(file, 'utf8')).filter((spec) => effectful.some((re) => re.test(spec)));
      tt.same(bad, [], `${name}`);
    }
  });
}

t.test('only src/sys loads koffi (the kernel boundary)', async (tt) => {
  for (const file of files(src)) {
    const name = relative(src, file);
    if (name.startsWith('sys/')) continue;
    tt.notOk(valueImports(readFileSync(file, 'utf8')).includes('koffi'), name);
  }
});
