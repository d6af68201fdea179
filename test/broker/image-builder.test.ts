// Building an image from a manifest (src/broker/image-builder.ts): the
// objects it needs come out once each, and reach the front packed in digest
// order (the front adds their store rows a chunk of neighbouring digests per
// transaction: 200 scattered digests dirtied ~800 pages of log a commit).
import t from 'tap';
import { createHash } from 'node:crypto';
import { prepareManifest } from '../../src/broker/image-builder.js';
import { parseManifest } from '../../src/manifest/load.js';
import { ObjectList } from '../../src/store/object-list.js';

const attrs = { mode: 0o644, uid: 0, gid: 0, mtime: { sec: 1700000000, nsec: 0 } };
const digest = (k: number) => createHash('sha256').update(`object ${k}`).digest('hex');

t.test('the objects come out once each, in digest order, whatever the order of the files', async (tt) => {
  const files = Array.from({ length: 50 }, (_, k) => ({ path: `/f${String(k).padStart(2, '0')}`, type: 'file', ...attrs, size: 100 + (k % 7), digest: digest(k % 7) }));
  const manifest = parseManifest(Buffer.from(JSON.stringify({ version: 1, entries: [{ path: '/', type: 'dir', ...attrs, mode: 0o755 }, ...files] })));
  const { objects } = prepareManifest(manifest);
  const expected = Array.from({ length: 7 }, (_, k) => [digest(k), 100 + k] as const).sort((a, b) => (a[0] < b[0] ? -1 : 1));
  const packed = ObjectList.pack(objects);
  tt.equal(packed.count, 7, 'seven objects, each once');
  tt.same(packed.slice(0, 7), expected, 'packed for the front sorted by digest, each with its size');
  const checked = await ObjectList.check(Buffer.from(packed.records), 7);
  tt.same(checked.slice(0, 7), expected, 'and so still as the front checks and reads them');
});
