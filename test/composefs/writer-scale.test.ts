// The writer on a larger generated tree whose xattrs repeat in every way the
// interning has to get right: the same digest and backing path on several
// files (so metacopy and redirect xattrs are shared), user values shared and
// unique, escaped trusted.overlay keys, inline files, symlinks, hardlinks,
// whiteouts and non-ASCII names. The sha256 is a snapshot of this writer's own
// output, pinned when it was reviewed: not an external reference (nothing
// outside this repository reproduces it; conformance.test.ts holds the
// mkcomposefs digests), but any change to these bytes, such as a change in
// how xattrs are shared, shows as a diff to review rather than passing silently.
import t from 'tap';
import { createHash } from 'node:crypto';
import { writeImage } from '../../src/composefs/writer.js';
import { validateManifest } from '../../src/manifest/load.js';
import type { Entry, Manifest } from '../../src/schema/types.generated.js';

function repetitiveTree(dirs: number): Manifest {
  const mtime = { sec: 1700000000, nsec: 0 };
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const entries: Entry[] = [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime, xattrs: [{ key: 'security.selinux', value: b64('root_t\0') }] }];
  for (let d = 0; d < dirs; d++) {
    const dir = `/d${String(d).padStart(4, '0')}-é`;
    entries.push({ path: dir, type: 'dir', mode: 0o755, uid: d % 3, gid: 0, mtime: d % 5 === 0 ? { sec: 1700000001, nsec: d } : mtime, xattrs: [{ key: 'security.selinux', value: b64('usr_t\0') }] });
    for (let f = 0; f < 40; f++) {
      const path = `${dir}/f${String(f).padStart(2, '0')}`;
      // Every 7th file repeats the content of file 0: same digest, same backing object.
      const digest = createHash('sha256').update(f % 7 === 0 ? 'same' : path).digest('hex');
      const xattrs = [{ key: 'security.selinux', value: b64(f % 2 ? 'usr_t\0' : 'bin_t\0') }];
      if (f % 5 === 0) xattrs.push({ key: 'user.note', value: b64(`note ${f % 3}`) });
      if (f % 11 === 0) xattrs.push({ key: 'trusted.overlay.custom', value: b64(path) });
      if (f === 13) entries.push({ path, type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime, target: `f${f - 1}` });
      else if (f === 17) entries.push({ path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size: 5, inline: b64('hello') });
      else if (f === 19 && d % 4 === 1) entries.push({ path, type: 'whiteout', mode: 0, uid: 0, gid: 0, mtime });
      else if (f === 23) entries.push({ path, type: 'hardlink', target: `${dir}/f22` });
      else entries.push({ path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size: 100 + f * 4099, digest, backing: `${digest.slice(0, 2)}/${digest.slice(2)}`, xattrs });
    }
  }
  return { version: 1, entries };
}

t.test('a generated tree of 4,101 entries with repeated xattrs gives the bytes of the reviewed snapshot', async (t) => {
  const manifest = validateManifest(repetitiveTree(100));
  t.equal(manifest.entries.length, 4101);
  const image = writeImage(manifest);
  t.equal(createHash('sha256').update(image).digest('hex'), '8ff3aeccdfb7c89e4791e8443c774dfb6426f18d3b49810b07f5f04f6914031c', 'the reviewed snapshot');
  t.ok(writeImage(manifest).equals(image), 'deterministic');
});
