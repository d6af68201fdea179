// Container images of a real root filesystem made by real tools, as a real
// rootless user: `podman import` of the run's debootstrap tarball
// (test/helpers/rootfs.ts), a second layer from `podman build` (a
// Containerfile that only COPYs, so nothing runs), `podman save` as
// docker-archive and oci-archive, and `skopeo copy` from podman's storage to
// an oci: layout. Each is imported by the user through a real broker
// (`mountgate image add docker-archive:… / oci-archive:… / oci:DIR:TAG /
// podman:IMAGE`, the last running `podman save` as the user), mounted, and
// compared entry by entry through the kernel as the user with the
// debootstrap tree and with podman's own mount of the image; `image
// export-layer` gives back every layer's diff ID as podman lists it. Runs as
// root: it makes the user, its runtime directory and the broker; it kills
// podman's pause process at the end.
import t from 'tap';
import { chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { World } from '../helpers/world.js';
import type { Rootfs } from '../helpers/rootfs.js';
import { differences, listingScript, type Listed } from '../helpers/tree-listing.js';
import type { RunResult } from '../helpers/run-as.js';
import { podmanErrors, rootlessPodman, type RootlessPodman } from '../helpers/rootless-podman.js';
import { failure, ImageChecks, rootfsWorld } from './rootfs-checks.js';

let world: World;
let rootfs: Rootfs;
let source: Listed[];
let alice: ImageChecks;
let home = '';
let podman: RootlessPodman | undefined;
t.before(async () => {
  ({ world, rootfs, source } = await rootfsWorld());
  home = world.dirs.alice!;
  podman = rootlessPodman(world.users.alice!, home);
  alice = new ImageChecks(world, world.users.alice!, home, podman.env);
});
t.teardown(async () => {
  podman?.stop();
  await world?.teardown(); // the user's remaining processes, and the home with podman's storage in it
});

const ok = (r: RunResult) => (r.code === 0 ? '' : `: exit ${r.code}: ${podmanErrors(r)}`);

/** The diff IDs podman lists for an image. */
async function podmanDiffIds(image: string): Promise<string[]> {
  const r = await alice.as(['podman', 'image', 'inspect', '--format', '{{json .RootFS.Layers}}', image]);
  if (r.code !== 0) throw new Error(`podman image inspect ${image}${ok(r)}`);
  return JSON.parse(r.stdout) as string[];
}

/** What of an image's config podman lists that `mountgate run` uses. */
async function podmanConfig(image: string): Promise<Record<string, unknown>> {
  const r = await alice.as(['podman', 'image', 'inspect', '--format', '{{json .Config}}', image]);
  if (r.code !== 0) throw new Error(`podman image inspect ${image}${ok(r)}`);
  const c = JSON.parse(r.stdout) as Record<string, unknown>;
  return Object.fromEntries(['Entrypoint', 'Cmd', 'Env', 'WorkingDir', 'User'].flatMap((k) => (c[k] === undefined || c[k] === '' || c[k] === null ? [] : [[k, c[k]]])));
}

/** Imports `ref` as `name`, lists the mounted image against `want`, and exports every layer against `diffIds`. */
async function importAndCompare(t: Tap.Test, ref: string, name: string, want: Listed[], diffIds: string[], config: unknown): Promise<void> {
  const add = await alice.as(['mountgate', 'image', 'add', ref, '--name', name, '--json']);
  t.equal(add.code, 0, `image add ${ref} exits 0${failure(add)}`);
  if (add.code !== 0) return;
  const out = JSON.parse(add.stdout) as { layers: { diffId: string }[]; config: unknown };
  t.same(out.layers.map((l) => l.diffId), diffIds, 'the layers podman lists, in order');
  t.same(out.config, config, 'the config podman gave the image');
  const { listing, error } = await alice.list(name);
  t.notOk(error, error ?? 'mounted and listed as alice');
  if (!listing) return;
  t.equal(listing.length, want.length, 'as many entries as the source');
  const diffs = differences(listing, want, { mtime: 'ns', xattrs: true });
  t.same(diffs.slice(0, 20), [], `every entry as in the source: type, mode, owner, size, mtime, xattrs, targets, hardlinks, contents (${diffs.length} differences)`);
  for (const [n, diffId] of diffIds.entries()) {
    const exported = await alice.exportedDigest(name, n);
    t.equal(exported.digest, diffId, `export-layer ${name} ${n} reproduces the layer's diff ID${exported.error ? `: ${exported.error}` : ''}`);
  }
}

let base: string[] = [];
t.test('podman import of the debootstrap tarball, then mountgate image add podman:IMAGE: the tree itself', async (t) => {
  const imp = await alice.as(['podman', 'import', '--quiet', '--change', 'CMD ["/bin/bash"]', '--change', 'ENV LANG=C.UTF-8', '--change', 'WORKDIR /root', rootfs.tars.posix, 'localhost/deb:1']);
  t.equal(imp.code, 0, `podman import as alice${ok(imp)}`);
  if (imp.code !== 0) return;
  base = await podmanDiffIds('localhost/deb:1');
  t.equal(base.length, 1, 'one layer');
  const config = await podmanConfig('localhost/deb:1');
  t.match(config, { Cmd: ['/bin/bash'], Env: ['LANG=C.UTF-8'], WorkingDir: '/root' }, 'podman kept the --change settings');
  await importAndCompare(t, 'podman:localhost/deb:1', 'deb', source, base, config);
});

let layered: Listed[] | undefined;
let layeredIds: string[] = [];
let layeredConfig: Record<string, unknown> = {};
t.test('podman build: a second layer (COPY), as podman mounts the image', async (t) => {
  const ctx = join(home, 'ctx');
  mkdirSync(ctx);
  writeFileSync(join(ctx, 'Containerfile'), 'FROM localhost/deb:1\nCOPY added.txt /srv/added.txt\n');
  writeFileSync(join(ctx, 'added.txt'), 'a file the second layer adds\n');
  for (const p of ['', 'Containerfile', 'added.txt']) chownSync(join(ctx, p), alice.user.uid, alice.user.gid);
  const build = await alice.as(['podman', 'build', '--pull=never', '--quiet', '-t', 'localhost/deb2:1', ctx]);
  t.equal(build.code, 0, `podman build as alice${ok(build)}`);
  if (build.code !== 0) return;
  layeredIds = await podmanDiffIds('localhost/deb2:1');
  t.equal(layeredIds.length, 2, 'two layers');
  t.equal(layeredIds[0], base[0], 'the first is podman import\'s');
  layeredConfig = await podmanConfig('localhost/deb2:1');
  // podman's own view of the image, in its user namespace (alice as 0, her subordinate ids as 1..: what `mountgate run` maps too).
  const script = `m=$(podman image mount localhost/deb2:1) && "$0" "$1" "$m"; rc=$?; podman image unmount localhost/deb2:1 >/dev/null; exit $rc`;
  const listed = await alice.as(['podman', 'unshare', 'sh', '-c', script, process.execPath, listingScript]);
  t.equal(listed.code, 0, `listed podman's mount of the image${ok(listed)}`);
  if (listed.code !== 0) return;
  layered = JSON.parse(listed.stdout) as Listed[];
  // The second layer has no entry for / (only srv/ and srv/added.txt): the
  // image's / is the first layer's. podman's overlay mount shows instead the
  // time its own directory for the second layer was made.
  const top = layered.find((e) => e.path === '.')!;
  top.mtime = source[0]!.mtime;
  const added = layered.find((e) => e.path === 'srv/added.txt');
  t.match(added, { type: 'file', uid: 0, gid: 0, size: 29 }, 'the COPYed file is there');
  // Apart from the COPY, podman's image is the debootstrap tree.
  const rest = differences(layered.filter((e) => !e.path.startsWith('srv')), source.filter((e) => !e.path.startsWith('srv')), { mtime: 'ns', xattrs: true });
  t.same(rest.slice(0, 20), [], `below the COPY, podman's image is the debootstrap tree (${rest.length} differences)`);
});

const saved = () => ({
  docker: join(home, 'deb2.docker.tar'),
  oci: join(home, 'deb2.oci.tar'),
  dir: join(home, 'deb2.oci'),
});

t.test('podman save (docker-archive, oci-archive) and skopeo copy to oci:, each imported as podman mounts it', async (t) => {
  if (!layered) return t.fail('podman build failed: nothing to import');
  const { docker, oci, dir } = saved();
  const save = await alice.as(['podman', 'save', '--quiet', '-o', docker, 'localhost/deb2:1']);
  t.equal(save.code, 0, `podman save${ok(save)}`);
  const saveOci = await alice.as(['podman', 'save', '--quiet', '--format', 'oci-archive', '-o', oci, 'localhost/deb2:1']);
  t.equal(saveOci.code, 0, `podman save --format oci-archive${ok(saveOci)}`);
  // skopeo reads podman's storage from inside podman's user namespace.
  const copy = await alice.as(['podman', 'unshare', 'skopeo', 'copy', '--quiet', 'containers-storage:localhost/deb2:1', `oci:${dir}:v1`]);
  t.equal(copy.code, 0, `skopeo copy containers-storage: to oci:${ok(copy)}`);
  for (const [ref, name] of [[`docker-archive:${docker}`, 'deb2-docker'], [`oci-archive:${oci}`, 'deb2-oci-archive'], [`oci:${dir}:v1`, 'deb2-oci']] as const) {
    await t.test(ref.split(':')[0]!, (t) => importAndCompare(t, ref, name, layered!, layeredIds, layeredConfig));
  }
});

t.test('mountgate image add podman:IMAGE of the two-layer image', async (t) => {
  if (!layered) return t.fail('podman build failed: nothing to import');
  await importAndCompare(t, 'podman:localhost/deb2:1', 'deb2', layered, layeredIds, layeredConfig);
});
