// The client's records beside imported images (src/import/sidecar.ts), on
// their own in a scratch data directory, with the broker's listing given as
// plain data: a name's file name, a record per name (a second name for the
// same image id keeps its own), what a listing no longer names is dropped,
// a record from before names is read as a fallback, and an import whose name
// moved on meanwhile keeps nothing. (Through a real broker, with real
// archives: sidecar-names.test.ts.)
import t from 'tap';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Manifest } from '../../src/schema/types.generated.js';
import { forgetSidecars, keepSidecar, nameKey, readSidecar, sidecarDir, type ListedImage } from '../../src/import/sidecar.js';
import { decodeSplit, type SplitRecord } from '../../src/import/tarsplit.js';

const home = mkdtempSync(join(tmpdir(), 'mountgate-sidecar-'));
process.env.XDG_DATA_HOME = home;
t.teardown(() => rmSync(home, { recursive: true, force: true }));

const id1 = '1'.repeat(64);
const id2 = '2'.repeat(64);
const digest = 'ab'.repeat(32);
const manifest: Manifest = {
  version: 1,
  entries: [
    { path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 } },
    { path: '/f', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 }, size: 3, digest },
  ],
};
/** A layer's split: a header's bytes, then the file. */
const split = (header: string): SplitRecord[] => [{ raw: Buffer.from(header) }, { file: { digest, size: 3, stored: 3 } }];
const layer = (diffId: string, header: string) => ({ diffId, entries: 2, split: split(header) });
const names = () => readdirSync(join(sidecarDir(), 'names')).sort();

t.test('a name becomes a file name of its own: safe characters kept, every other byte %XX, a long name hashed', async (t) => {
  t.equal(nameKey('app_1-x'), 'app_1-x');
  t.equal(nameKey('docker.io/library/alpine:3'), 'docker%2Eio%2Flibrary%2Falpine%3A3');
  t.equal(nameKey('..'), '%2E%2E', 'no name is . or ..');
  t.equal(nameKey('ä'), '%C3%A4', 'UTF-8 bytes');
  t.not(nameKey('a.'), nameKey('a%2E'), '% itself is encoded: two names never share a key');
  const long = 'x.'.repeat(127);
  t.match(nameKey(long), /^~[0-9a-f]{64}$/, 'a name whose encoding is too long for a file name: its sha256');
  t.not(nameKey(long), nameKey(`${long}y`));
});

t.test('two names of one image id keep their own layers and config; what the listing no longer names goes', async (t) => {
  const both: ListedImage[] = [{ id: id1, name: 'one' }, { id: id1, name: 'two' }];
  const a = await keepSidecar({ name: 'one', imageId: id1, source: 'a.tar', config: { Cmd: ['/one'] } }, [layer('sha256:a', 'A')], manifest, async () => both);
  t.same(a, { kept: true, layers: [{ diffId: 'sha256:a', entries: 2, split: '0.tarsplit' }] });
  await keepSidecar({ name: 'two', imageId: id1, source: 'b.tar', config: { Cmd: ['/two'] } }, [layer('sha256:b0', 'B0'), layer('sha256:b1', 'B1')], manifest, async () => both);
  const one = readSidecar({ id: id1, name: 'one' })!;
  const two = readSidecar({ id: id1, name: 'two' })!;
  t.same([one.sidecar.config, one.sidecar.layers.length], [{ Cmd: ['/one'] }, 1], 'one: its config, its one layer');
  t.same([two.sidecar.config, two.sidecar.layers.length], [{ Cmd: ['/two'] }, 2], 'two: its config, its two layers');
  t.same(decodeSplit(readFileSync(join(two.layerDir, '1.tarsplit'))), split('B1'), 'each layer directory holds its own splits');
  t.same(JSON.parse(readFileSync(join(one.layerDir, 'paths.json'), 'utf8')), { [digest]: '/f' });
  t.equal(readSidecar({ id: id2, name: 'one' }), undefined, 'a record counts only for the image it was kept for');

  // Imported again under the name: replaced whole, the old layer directory gone.
  await keepSidecar({ name: 'two', imageId: id1, source: 'c.tar' }, [layer('sha256:c', 'C')], manifest, async () => both);
  t.same(readSidecar({ id: id1, name: 'two' })!.sidecar.layers.map((l) => l.diffId), ['sha256:c']);
  t.equal(names().filter((f) => f.endsWith('.layers')).length, 2, 'one layer directory per name');

  // The broker renamed the image to "two" (or one was removed): "one" goes, with its layers and stray files.
  writeFileSync(join(sidecarDir(), 'names', 'x.json.99.tmp'), '{');
  mkdirSync(join(sidecarDir(), 'names', 'orphan.0000.layers'));
  await forgetSidecars(async () => [{ id: id1, name: 'two' }]);
  t.same(names().filter((f) => f.endsWith('.json')), ['two.json']);
  t.equal(names().length, 2, 'the record of two and its layer directory, nothing else');
  await forgetSidecars(async () => []);
  t.same(names(), [], 'an empty listing: nothing kept');
});

t.test('an import whose name another image took meanwhile keeps nothing', async (t) => {
  const r = await keepSidecar({ name: 'raced', imageId: id1, source: 'a.tar' }, [layer('sha256:a', 'A')], manifest, async () => [{ id: id2, name: 'raced' }]);
  t.same(r, { kept: false, layers: [{ diffId: 'sha256:a', entries: 2 }] });
  t.equal(readSidecar({ id: id2, name: 'raced' }), undefined);
  t.same(names(), []);
});

t.test('a record from before names (ID.json) is read for its image until the name has one, and dropped then', async (t) => {
  writeFileSync(join(sidecarDir(), `${id2}.json`), JSON.stringify({ source: 'old.tar', config: { Cmd: ['/old'] }, layers: [{ diffId: 'sha256:o', entries: 1, split: '0.tarsplit' }] }));
  mkdirSync(join(sidecarDir(), `${id2}.layers`));
  const old = readSidecar({ id: id2, name: 'legacy' })!;
  t.same([old.sidecar.config, old.layerDir], [{ Cmd: ['/old'] }, join(sidecarDir(), `${id2}.layers`)], 'read by id, its layers in ID.layers');
  await forgetSidecars(async () => [{ id: id2, name: 'legacy' }]);
  t.ok(existsSync(join(sidecarDir(), `${id2}.json`)), 'kept while its image is listed and no name has a record');
  await keepSidecar({ name: 'legacy', imageId: id2, source: 'new.tar' }, [layer('sha256:n', 'N')], manifest, async () => [{ id: id2, name: 'legacy' }]);
  t.same(readSidecar({ id: id2, name: 'legacy' })!.sidecar.source, 'new.tar', 'the name\'s record counts');
  t.notOk(existsSync(join(sidecarDir(), `${id2}.json`)) || existsSync(join(sidecarDir(), `${id2}.layers`)), 'the legacy record is gone');
});

t.test('an image registered anew from a directory (no record of its own): its name\'s record and its record from before names go', async (t) => {
  writeFileSync(join(sidecarDir(), `${id1}.json`), JSON.stringify({ source: 'old.tar', config: { Cmd: ['/old'] }, layers: [] }));
  await keepSidecar({ name: 'dir', imageId: id1, source: 'a.tar', config: { Cmd: ['/a'] } }, [layer('sha256:a', 'A')], manifest, async () => [{ id: id1, name: 'dir' }]);
  writeFileSync(join(sidecarDir(), `${id1}.json`), JSON.stringify({ source: 'old.tar', config: { Cmd: ['/old'] }, layers: [] }));
  await forgetSidecars(async () => [{ id: id1, name: 'dir' }], { id: id1, name: 'dir' });
  t.equal(readSidecar({ id: id1, name: 'dir' }), undefined, 'no config is left for the name, from either record');
  t.same(names(), []);
  t.notOk(existsSync(join(sidecarDir(), `${id1}.json`)));
});

t.test('a record that is no JSON (edited by hand) counts as none and is dropped by the next write', async (t) => {
  writeFileSync(join(sidecarDir(), 'names', 'broken.json'), '{"name": "bro');
  await keepSidecar({ name: 'ok', imageId: id1, source: 'a.tar' }, [layer('sha256:a', 'A')], manifest, async () => [{ id: id1, name: 'ok' }, { id: id2, name: 'broken' }]);
  t.notOk(existsSync(join(sidecarDir(), 'names', 'broken.json')), 'dropped');
  t.ok(readSidecar({ id: id1, name: 'ok' }), 'the write went on');
  await forgetSidecars(async () => []);
});
