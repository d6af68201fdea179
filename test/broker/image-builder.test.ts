// Building an image from a manifest (src/broker/image-builder.ts): the
// objects it needs come out once each, in digest order (the front adds their
// store rows a chunk of neighbouring digests per transaction).
import t from 'tap';
import { createHash } from 'node:crypto';
import { prepareManifest } from '../../src/broker/image-builder.js';
import { parseManifest } from '../../src/manifest/load.js';

const attrs = { mode: 0o644, uid: 0, gid: 0, mtime: { sec: 1700000000, nsec: 0 } };
const digest = (k: number) => createHash('sha256').update(`object ${k}`).digest('hex');

t.test('the objects come out once each, in digest order, whatever the order of the files', async (tt) => {
  const files = Array.from({ length: 50 }, (_, k) => ({ path: `/f${String(k).padStart(2, '0')}`, type: 'file', ...attrs, size: 100 + (k % 7), digest: digest(k % 7) }));
  const manifest = parseManifest(Buffer.from(JSON.stringify({ version: 1, entries: [{ path: '/', type: 'dir', ...attrs, mode: 0o755 }, ...files] })));
  const { objects } = prepareManifest(manifest);
  const expected = Array.from({ length: 7 }, (_, k) => [digest(k), 100 + k] as const).sort((a, b) => (a[0] < b[0] ? -1 : 1));
  tt.same(Object.entries(objects), expected, 'seven objects, sorted by digest, each with its size');
  tt.same(Object.entries(JSON.parse(JSON.stringify(objects)) as Record<string, number>), expected, 'and so still after the JSON that carries them to the front');
});
