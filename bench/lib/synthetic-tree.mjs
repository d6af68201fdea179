// The synthetic image the benches register: directories of 1000 files each,
// names sorting in path order, file i given object i mod OBJECTS. Plain
// JavaScript: benches that run as a test user load it without tsx.

const mtime = { sec: 1700000000, nsec: 0 };

/** Manifest entries: `entries` in all; `object(k)` is the size and digest of object k. */
export function syntheticEntries(entries, objects, object) {
  const list = [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime }];
  let file = 0;
  for (let d = 0; list.length < entries; d++) {
    const dir = `/d${String(d).padStart(5, '0')}`;
    list.push({ path: dir, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime });
    for (let f = 0; f < 1000 && list.length < entries; f++, file++) {
      const { size, digest } = object(file % objects);
      list.push({ path: `${dir}/f${String(f).padStart(4, '0')}`, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size, digest });
    }
  }
  return list;
}
