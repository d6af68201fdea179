// What a failed import takes back (src/import/upload.ts): a pure unit test
// with a broker that records calls. An image that was not yours goes; an
// image you had under other names loses only the name the import gave it
// anew; an image you had with no name, or a name you already gave, stays as
// it was (removing the last name would remove the image).
import t from 'tap';
import type { MountgateBroker } from '../../src/client/broker.js';
import { uploadImported } from '../../src/import/upload.js';
import type { Manifest } from '../../src/schema/types.generated.js';

const id = 'a'.repeat(64);
const other = 'b'.repeat(64);
const manifest = (name: string): Manifest => ({ version: 1, name, entries: [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 } }] }) as Manifest;

/** Imports `name` against a broker listing `listed`, aborted right after AddImage registered `id`; returns the removals asked for. */
async function failedImport(tt: Tap.Test, listed: { id: string; name?: string; names?: string[] }[], name: string): Promise<string[]> {
  const calls: string[] = [];
  const abort = new AbortController();
  const broker = {
    listImages: async () => listed,
    addImage: async () => {
      abort.abort(new Error('stopped'));
      return { imageId: id, missing: [] };
    },
    removeImage: async (imageId: string) => void calls.push(`image ${imageId === id ? 'id' : imageId}`),
    removeImageName: async (n: string) => void calls.push(`name ${n}`),
  } as unknown as MountgateBroker;
  await tt.rejects(uploadImported(broker, manifest(name), { open: () => undefined } as never, { signal: abort.signal }), /stopped/);
  return calls;
}

t.test('a failed import takes back what it registered, and no more', async (tt) => {
  tt.same(await failedImport(tt, [], 'new'), ['image id'], 'an image that was not yours: removed');
  tt.same(await failedImport(tt, [{ id, name: 'old', names: ['old'] }], 'new'), ['name new'], 'yours under another name: only the new name goes');
  tt.same(await failedImport(tt, [{ id, name: 'old' }], 'new'), ['name new'], 'the same from a broker that lists name alone');
  tt.same(await failedImport(tt, [{ id, names: [] }], 'new'), [], 'yours with no name: the name is its last, it stays');
  tt.same(await failedImport(tt, [{ id, name: 'new', names: ['new', 'old'] }], 'new'), [], 'a name it had already: nothing to take back');
  tt.same(await failedImport(tt, [{ id, names: ['old'] }, { id: other, names: ['new'] }], 'new'), [], 'a name another image had (it moved): left where it is');
});
