// "Pure decisions, thin effects", checked rather than hoped for: the pure
// rooms (policy, composefs format and writer, manifests, fs-verity digests)
// reach no module that performs I/O, through any chain of imports, and only
// src/sys loads the FFI. The graph follows static imports, `export ... from`,
// dynamic import() and require(); type-only imports carry no effect.
import t from 'tap';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { repoRoot } from './helpers/paths.js';

const src = join(repoRoot, 'src');
const pureRooms = ['policy', 'composefs', 'manifest', 'verity'];
const effectfulModules = [/^node:(fs|child_process|net|dgram|worker_threads|os|process|module)(\/|$)/, /^koffi$/, /^dbus-next$/, /^usocket$/, /^node-pty$/, /^better-sqlite3$/];
const effectfulRooms = ['sys/', 'broker/', 'client/', 'store/', 'cli/', 'bus/'];

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

/** Comments out of the way, so a commented-out import is not an edge (string contents are kept). */
function stripComments(text: string): string {
  return text.replace(/\/\*[^]*?\*\//g, ' ').replace(/(^|[^:'"`\\])\/\/.*$/gm, '$1');
}

/** The specifiers a module loads at run time; `dynamic` lists import()/require() calls whose argument is not a literal. */
export function valueImports(source: string): { specs: string[]; dynamic: string[] } {
  const text = stripComments(source);
  const specs: string[] = [];
  const dynamic: string[] = [];
  // import x from, import { a, type B } from, import * as x from; not `import type`,
  // nor braces of type-only names (TypeScript elides those).
  for (const m of text.matchAll(/(?:^|[;\n])\s*import\s+(?!type\s)([^;'"]*?)\s+from\s+(['"])([^'"]+)\2/g)) {
    const clause = m[1]!.trim();
    const braces = /^\{([^}]*)\}$/.exec(clause);
    if (braces && braces[1]!.split(',').map((s) => s.trim()).filter(Boolean).every((s) => s.startsWith('type '))) continue;
    specs.push(m[3]!);
  }
  // import 'side-effect';
  for (const m of text.matchAll(/(?:^|[;\n])\s*import\s+(['"])([^'"]+)\1/g)) specs.push(m[2]!);
  // export * from, export * as x from, export { a } from; not `export type`.
  for (const m of text.matchAll(/(?:^|[;\n])\s*export\s+(?!type\s)([^;'"]*?)\s+from\s+(['"])([^'"]+)\2/g)) {
    const braces = /^\{([^}]*)\}$/.exec(m[1]!.trim());
    if (braces && braces[1]!.split(',').map((s) => s.trim()).filter(Boolean).every((s) => s.startsWith('type '))) continue;
    specs.push(m[3]!);
  }
  // import('x'), require('x'); anything else as their argument cannot be checked.
  // `typeof import('x')` is a type.
  for (const m of text.matchAll(/(?<![\w$.]|\btypeof\s+)(import|require)\s*\(\s*([^)]*?)\s*\)/g)) {
    const literal = /^(['"`])([^'"`$]+)\1$/.exec(m[2]!);
    if (literal) specs.push(literal[2]!);
    else dynamic.push(`${m[1]}(${m[2]})`);
  }
  return { specs, dynamic };
}

/** A relative specifier as the src/ file it names (the .js of a .ts source). */
function resolveSpec(from: string, spec: string): string | undefined {
  if (!spec.startsWith('.')) return undefined;
  const base = resolve(dirname(from), spec);
  for (const candidate of [base.replace(/\.js$/, '.ts'), `${base}.ts`, join(base, 'index.ts')]) if (existsSync(candidate)) return candidate;
  return undefined;
}

interface Node {
  /** src-relative names of the src modules it imports. */
  modules: string[];
  /** Bare and node: specifiers it imports. */
  packages: string[];
  dynamic: string[];
  unresolved: string[];
}

const graph = new Map<string, Node>();
for (const file of files(src)) {
  const { specs, dynamic } = valueImports(readFileSync(file, 'utf8'));
  const node: Node = { modules: [], packages: [], dynamic, unresolved: [] };
  for (const spec of specs) {
    if (!spec.startsWith('.')) node.packages.push(spec);
    else {
      const target = resolveSpec(file, spec);
      if (target) node.modules.push(relative(src, target));
      else node.unresolved.push(spec);
    }
  }
  graph.set(relative(src, file), node);
}

/** Every effect reachable from `start`, each with the import chain that reaches it. */
function effectsReachable(start: string): string[] {
  const found: string[] = [];
  const seen = new Set<string>([start]);
  const queue: string[][] = [[start]];
  while (queue.length > 0) {
    const chain = queue.shift()!;
    const name = chain.at(-1)!;
    const node = graph.get(name)!;
    const via = chain.join(' -> ');
    if (chain.length > 1 && effectfulRooms.some((r) => name.startsWith(r))) {
      found.push(via);
      continue;
    }
    for (const p of node.packages) if (effectfulModules.some((re) => re.test(p))) found.push(`${via} -> ${p}`);
    for (const d of node.dynamic) found.push(`${via} -> ${d} (not a literal: cannot be checked)`);
    for (const u of node.unresolved) found.push(`${via} -> ${u} (does not resolve to a file in src/)`);
    for (const next of node.modules) {
      if (seen.has(next)) continue;
      seen.add(next);
      queue.push([...chain, next]);
    }
  }
  return found;
}

t.test('the import scanner sees every way a module is loaded', async (tt) => {
  const source = [
    "import { a } from './a.js';",
    "import type { B } from './b.js';",
    "import { type C, type D } from './cd.js';",
    "import { type E, f } from './ef.js';",
    "import * as g from 'node:fs';",
    "import './side.js';",
    "export { h } from './h.js';",
    "export * from './star.js';",
    "export type { I } from './i.js';",
    "const j = await import('./j.js');",
    'const k = await import(name);',
    "const l = require('koffi');",
    "const n = require('dbus-next') as typeof import('not-a-value.js');",
    "// import { m } from './commented.js';",
    "/* export * from './block.js'; */",
    "const s = 'import x from \"./in-a-string.js\"';",
  ].join('\n');
  const { specs, dynamic } = valueImports(source);
  tt.same(specs.sort(), ['./a.js', './ef.js', './h.js', './j.js', './side.js', './star.js', 'koffi', 'dbus-next', 'node:fs'].sort());
  tt.same(dynamic, ['import(name)']);
});

t.test('the import graph covers src/', async (tt) => {
  tt.ok(graph.size > 40, `${graph.size} modules`);
  tt.ok(graph.get('composefs/writer.ts')!.modules.includes('manifest/check.ts'), 'an edge it must see');
});

for (const room of pureRooms) {
  t.test(`src/${room} reaches nothing that performs effects, through any import chain`, async (tt) => {
    for (const name of [...graph.keys()].filter((n) => n.startsWith(`${room}/`)).sort()) {
      tt.same(effectsReachable(name), [], name);
    }
  });
}

t.test('only src/sys loads koffi (the kernel boundary)', async (tt) => {
  for (const [name, node] of graph) {
    if (name.startsWith('sys/')) continue;
    tt.notOk(node.packages.includes('koffi'), name);
    tt.same(node.dynamic, [], `${name}: no import()/require() whose module cannot be checked`);
  }
});

t.test('only src/store opens the database (better-sqlite3)', async (tt) => {
  for (const [name, node] of graph) {
    if (name.startsWith('store/')) continue;
    tt.notOk(node.packages.includes('better-sqlite3'), name);
  }
  tt.ok(graph.get('store/db.ts')!.packages.includes('better-sqlite3'), 'the store database is where it is opened');
});
