// Layer tarballs of a real root filesystem (the run's debootstrap tree,
// test/helpers/rootfs.ts) made by GNU tar in the gnu, ustar and posix
// formats, the posix one also gzip- and zstd-compressed, each imported by a
// real user through a real broker with `mountgate image add FILE`, mounted,
// and compared with the tree entry by entry through the kernel as the user:
// type, mode, owner, size, mtime (to the second where the format keeps no
// more), xattrs (user.* and a file capability, where the format keeps them),
// symlink targets, hardlink groups and contents. Then `image export-layer`
// gives back the archive byte for byte (the layer's diff ID).
import t from 'tap';
import type { World } from '../helpers/world.js';
import type { Rootfs, RootfsTar } from '../helpers/rootfs.js';
import { differences, type Listed } from '../helpers/tree-listing.js';
import { failure, ImageChecks, rootfsWorld, sha256File } from './rootfs-checks.js';

let world: World;
let rootfs: Rootfs;
let source: Listed[];
let alice: ImageChecks;
const listings = new Map<RootfsTar, Listed[]>();
t.before(async () => {
  ({ world, rootfs, source } = await rootfsWorld());
  // HOME: where the CLI keeps what export-layer reads ($XDG_DATA_HOME defaults below it).
  alice = new ImageChecks(world, world.users.alice!, world.dirs.alice!, { HOME: world.dirs.alice! });
});
t.teardown(() => world?.teardown());

t.test('the source tree has what the comparisons must see', async (t) => {
  const at = (p: string) => source.find((e) => e.path === p);
  t.ok(source.length > 5000, `a whole root filesystem (${source.length} entries)`);
  t.ok(at('usr/local/bin/pinglike')?.xattrs['security.capability'], 'a file capability');
  t.equal(at('etc/debian_version')?.xattrs['user.binary'], '00ff0a00', 'a binary user.* value');
  t.ok(at('usr/share/doc')?.xattrs['user.dir'], 'an xattr on a directory');
  t.equal(at('usr/bin/perl')?.ino, at('usr/bin/perl5.36.0')?.ino, 'a hardlink');
  t.match(at('home/user/.config/shared'), { uid: 1000, gid: 4321, mode: 0o640 }, 'owners other than root');
  t.ok(source.some((e) => e.type === 'symlink'), 'symlinks');
  t.notOk(source.some((e) => /dev$/.test(e.type)), 'no device nodes (a base image has none)');
});

const formats: { tar: RootfsTar; mtime: 'ns' | 's'; xattrs: boolean; compression: string }[] = [
  { tar: 'gnu', mtime: 's', xattrs: false, compression: 'none' },
  { tar: 'ustar', mtime: 's', xattrs: false, compression: 'none' },
  { tar: 'posix', mtime: 'ns', xattrs: true, compression: 'none' },
  { tar: 'posix.gz', mtime: 'ns', xattrs: true, compression: 'gzip' },
  { tar: 'posix.zst', mtime: 'ns', xattrs: true, compression: 'zstd' },
];

for (const f of formats) {
  // Each image is checked right after it is added: images of the same tree
  // (gnu and ustar hold the same entries) are one image, under the newest name.
  t.test(`tar --format=${f.tar}: the mounted image is the tree, export-layer the archive`, async (t) => {
    const name = `deb-${f.tar.replace('.', '-')}`;
    const add = await alice.as(['mountgate', 'image', 'add', rootfs.tars[f.tar], '--name', name, '--json']);
    t.equal(add.code, 0, `image add exits 0${failure(add)}`);
    if (add.code !== 0) return;
    const out = JSON.parse(add.stdout) as { diffId: string; compression: string; entries: number };
    const diffId = `sha256:${await sha256File(rootfs.plain[f.tar])}`;
    t.match(out, { diffId, compression: f.compression, entries: source.length }, 'the diff ID is the sha256 of the uncompressed archive; every entry');
    const { listing, error } = await alice.list(name);
    t.notOk(error, error ?? 'mounted and listed as alice');
    if (!listing) return;
    listings.set(f.tar, listing);
    t.equal(listing.length, source.length, 'as many entries as the tree');
    const diffs = differences(listing, source, { mtime: f.mtime, xattrs: f.xattrs });
    t.same(diffs.slice(0, 20), [], `every entry as in the tree: type, mode, owner, size, mtime to the ${f.mtime === 's' ? 'second' : 'nanosecond'}, ${f.xattrs ? 'xattrs' : 'no xattrs (the format has none)'}, targets, hardlinks, contents (${diffs.length} differences)`);
    const exported = await alice.exportedDigest(name, 0);
    t.equal(exported.digest, diffId, `export-layer ${name} 0 is the archive byte for byte${exported.error ? `: ${exported.error}` : ''}`);
  });
}

t.test('the comparison sees what a format loses: the gnu image against the tree as if it kept everything', async (t) => {
  const gnu = listings.get('gnu');
  if (!gnu) return t.fail('the gnu image was not listed');
  const diffs = differences(gnu, source, { mtime: 'ns', xattrs: true });
  const withXattrs = source.filter((e) => Object.keys(e.xattrs).length > 0).map((e) => e.path).sort();
  t.same([...new Set(diffs.flatMap((d) => /^(.*): xattrs /.exec(d)?.[1] ?? []))].sort(), withXattrs, `every entry with xattrs differs by its xattrs (${withXattrs.join(', ')})`);
  const withNs = source.filter((e) => !e.mtime.endsWith('.000000000')).length;
  t.equal(diffs.filter((d) => /: mtime /.test(d)).length, withNs, `every mtime with nanoseconds differs (${withNs} of them)`);
  t.equal(diffs.length, withXattrs.length + withNs, 'and nothing else');
});
