// A large manifest's entries checked on a worker ahead of the build
// (cli/check-ahead.ts): the build takes exactly what the
// single-threaded streaming path takes and builds the same bytes, gives up
// where it gives up (at an entry the worker refuses, however late), and falls
// back to the whole-manifest path, in its words, when the worker is gone.
// Then `mountgate image build` of a manifest large enough to use the worker.
import t from 'tap';
import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHECK_AHEAD_MIN_BYTES, CheckAhead, PUBLISH_EVERY } from '../../src/cli/check-ahead.js';
import { manifestTextTree, streamedManifestTree } from '../../src/composefs/manifest-tree.js';
import { writeCheckedImage, writeTree } from '../../src/composefs/writer.js';
import { InvalidManifestError } from '../../src/manifest/errors.js';
import { manifestJson } from '../../src/manifest/format.js';
import { manifestText, manifestTextBytes, parseManifestText } from '../../src/manifest/load.js';
import type { Manifest } from '../../src/schema/types.generated.js';
import { asText, mutate, toManifest, treeInput } from '../fuzz/properties.js';
import { repoRoot } from '../helpers/paths.js';

/** A worker given the text as the build would give it (manifestTextBytes in shared memory). */
function aheadOf(bytes: Buffer, stallMs?: number): CheckAhead {
  const ahead = new CheckAhead(stallMs);
  ahead.share(manifestTextBytes(bytes, true));
  return ahead;
}

/** The streamed tree's bytes, or undefined when the streaming path gives up. */
function streamed(bytes: Buffer, ahead?: CheckAhead): Buffer | undefined {
  const tree = streamedManifestTree(manifestText(bytes), () => ({}), ahead);
  return tree === undefined ? undefined : writeTree(tree);
}

function refusal(build: () => unknown): string | undefined {
  try {
    build();
    return undefined;
  } catch (err) {
    if (!(err instanceof InvalidManifestError)) throw err;
    return err.message;
  }
}

t.test('checked ahead or not: the same image, or the same hand-over to the whole path', async (t) => {
  const counts = { built: 0, handedOver: 0 };
  const agree = (bytes: Buffer) => {
    try {
      manifestText(bytes);
    } catch {
      return; // not UTF-8 or too big: no text to stream either way
    }
    const alone = streamed(bytes);
    const ahead = streamed(bytes, aheadOf(bytes));
    if (alone === undefined ? ahead !== undefined : ahead === undefined || !ahead.equals(alone)) {
      throw new Error(`checked ahead: ${ahead === undefined ? 'handed over' : 'built'}; alone: ${alone === undefined ? 'handed over' : 'built'}: ${bytes.toString('utf8').slice(0, 2000)}`);
    }
    counts[alone === undefined ? 'handedOver' : 'built']++;
  };
  fc.assert(fc.property(treeInput, (input) => agree(Buffer.from(manifestJson(asText(toManifest(input)))))), { numRuns: 30, seed: 31 });
  const mutation = fc.record({ at: fc.nat(), kind: fc.constantFrom('flip', 'set', 'insert', 'delete', 'repeat'), byte: fc.constantFrom(0x0a, 0x22, 0x2c, 0x2f, 0x30, 0x5c, 0x7d), bit: fc.integer({ min: 0, max: 7 }), len: fc.integer({ min: 1, max: 16 }) });
  fc.assert(fc.property(treeInput, fc.array(mutation, { minLength: 1, maxLength: 3 }), (input, list) => agree(mutate(Buffer.from(manifestJson(asText(toManifest(input)))), list))), { numRuns: 60, seed: 32 });
  t.ok(counts.built >= 20 && counts.handedOver >= 15, `built ${counts.built}, handed over ${counts.handedOver}: both outcomes were tried`);
});

/** A manifest of `files` files in 10 directories, each file with its digest (as a real tree's are). */
function bigManifest(files: number): Manifest {
  const entries: Manifest['entries'] = [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: { sec: 1, nsec: 0 } }];
  const perDir = Math.ceil(files / 10);
  for (let d = 0; d < 10; d++) {
    entries.push({ path: `/d${d}`, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: { sec: 2, nsec: 0 } });
    for (let f = 0; f < perDir && d * perDir + f < files; f++) {
      const n = d * perDir + f;
      const digest = (n.toString(16).padStart(8, '0') + 'c0ffee').repeat(5).slice(0, 64).padEnd(64, '0');
      entries.push({
        path: `/d${d}/file-${String(f).padStart(7, '0')}`, type: 'file', mode: 0o644, uid: 1000 + (n % 7), gid: 1000, mtime: { sec: 1_700_000_000 + n, nsec: n % 1000 },
        size: 4096 + n, digest, xattrs: n % 5 === 0 ? [{ key: 'user.n', value: Buffer.from(String(n)).toString('base64') }] : undefined,
      } as Manifest['entries'][number]);
    }
  }
  return { version: 1, entries };
}

t.test('an entry the worker refuses, late in a large manifest: handed over, and refused in the whole path\'s words', async (t) => {
  const m = bigManifest(20 * PUBLISH_EVERY);
  const good = Buffer.from(manifestJson(m));
  const image = writeCheckedImage(parseManifestText(manifestText(good)));
  t.ok(streamed(good, aheadOf(good))!.equals(image), 'the sound manifest: the whole path\'s bytes');
  const late = m.entries.length - 3;
  const cases: Array<[string, (e: Record<string, unknown>) => void]> = [
    ['the schema (a mode that is a string)', (e) => (e.mode = '644')],
    ['the checks (a path out of order)', (e) => (e.path = '/d0/zzz')],
    ['the encoding check (a digest that is not one)', (e) => (e.digest = 'x'.repeat(64))],
  ];
  for (const [what, change] of cases) {
    const bad = structuredClone(m);
    change(bad.entries[late] as unknown as Record<string, unknown>);
    const bytes = Buffer.from(manifestJson(bad));
    t.equal(streamed(bytes, aheadOf(bytes)), undefined, `${what} at entry ${late}: the streamed build gives up`);
    const whole = refusal(() => parseManifestText(manifestText(bytes)));
    t.ok(whole !== undefined, `${what}: the whole path refuses it`);
    t.equal(refusal(() => manifestTextTree(manifestText(bytes), {}, aheadOf(bytes))), whole, `${what}: refused as the whole path words it`);
  }
});

t.test('a worker that is gone: the build waits for it no longer than its stall time, then the whole path builds', async (t) => {
  const bytes = Buffer.from(manifestJson(bigManifest(4 * PUBLISH_EVERY)));
  const ahead = new CheckAhead(300);
  ahead.stop(); // what a worker that died would look like to the build: no progress
  ahead.share(manifestTextBytes(bytes, true));
  await new Promise((resolve) => setTimeout(resolve, 100));
  const started = Date.now();
  const tree = manifestTextTree(manifestText(bytes), {}, ahead);
  t.ok(writeTree(tree).equals(writeCheckedImage(parseManifestText(manifestText(bytes)))), 'the whole path\'s image');
  t.ok(Date.now() - started < 5000, `given up on it after ${Date.now() - started} ms (its stall time 300 ms)`);
});

t.test('mountgate image build of a manifest large enough for the worker: the image of its dump, and a late refusal in the usual words', async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'mountgate-check-ahead-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const run = (args: string[]) => spawnSync('env', ['-u', 'NODE_OPTIONS', join(repoRoot, 'bin/mountgate'), ...args], { encoding: 'utf8' });
  let m = bigManifest(80_000);
  // A name beyond ASCII: the text is escaped (manifestTextBytes), and the worker reads the escaped text.
  m.entries.splice(3, 0, { ...(m.entries[2] as object), path: '/d0/file-0000000-é' } as Manifest['entries'][number]);
  const text = manifestJson(m);
  t.ok(Buffer.byteLength(text) >= CHECK_AHEAD_MIN_BYTES, `${Buffer.byteLength(text)} bytes: the worker checks it`);
  writeFileSync(join(work, 'big.json'), text);
  const built = run(['image', 'build', join(work, 'big.json'), '-o', join(work, 'big.cfs')]);
  t.equal(built.status, 0, built.stderr);
  const expected = writeCheckedImage(parseManifestText(manifestText(Buffer.from(text))));
  t.ok(readFileSync(join(work, 'big.cfs')).equals(expected), 'the same bytes as the library\'s whole-manifest build');
  m = structuredClone(m);
  (m.entries[m.entries.length - 2] as unknown as Record<string, unknown>).uid = -1;
  writeFileSync(join(work, 'bad.json'), manifestJson(m));
  const refused = run(['image', 'build', join(work, 'bad.json'), '-o', join(work, 'bad.cfs')]);
  const whole = refusal(() => parseManifestText(manifestText(readFileSync(join(work, 'bad.json')))));
  t.equal(refused.status, 3, 'exit code 3: invalid input');
  t.equal(refused.stderr, `mountgate: ${whole}\n`, 'the whole path\'s words');
  t.notOk(existsSync(join(work, 'bad.cfs')), 'no image written');
});
