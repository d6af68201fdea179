// Container images made by real tools: `podman import` of a small tree (with
// a config), `podman save` as docker-archive and oci-archive, `skopeo copy`
// to an oci: layout. Each imports to the tree's own manifest, entry by entry,
// with the config the image was given; a corrupt blob is refused by name.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { importImage } from '../../src/import/oci.js';
import { manifestFromDirectory } from '../../src/client/images.js';
import { buildTree } from './fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'mountgate-oci-'));
const podman = (args: string[]) =>
  execFileSync('podman', ['--root', join(dir, 'storage'), '--runroot', join(dir, 'run'), '--storage-driver', 'vfs', '--events-backend', 'file', '--cgroup-manager', 'cgroupfs', ...args], { encoding: 'utf8' });
t.teardown(() => {
  try {
    podman(['rmi', '-a', '-f']);
  } catch {
    // the storage goes with the directory
  }
  rmSync(dir, { recursive: true, force: true });
});

const tree = join(dir, 'tree');
buildTree(tree);
execFileSync('tar', ['--format=posix', '--xattrs', '--xattrs-include=*', '--sort=name', '-C', tree, '-cf', join(dir, 'rootfs.tar'), '.']);
podman(['import', '--change', 'CMD ["/bin/sh","-c","echo hi"]', '--change', 'ENV FOO=bar', '--change', 'WORKDIR /etc', '--change', 'ENTRYPOINT ["/usr/bin/tool"]', '--change', 'USER 1234', join(dir, 'rootfs.tar'), 'localhost/mgtest:1']);
podman(['save', '-o', join(dir, 'docker.tar'), 'localhost/mgtest:1']);
podman(['save', '--format', 'oci-archive', '-o', join(dir, 'oci.tar'), 'localhost/mgtest:1']);
execFileSync('skopeo', ['copy', '--quiet', `docker-archive:${join(dir, 'docker.tar')}`, `oci:${join(dir, 'ocidir')}:v1`]);

const sources = [`docker-archive:${join(dir, 'docker.tar')}`, `oci-archive:${join(dir, 'oci.tar')}`, `oci:${join(dir, 'ocidir')}:v1`, `oci:${join(dir, 'ocidir')}`];

for (const source of sources) {
  t.test(`${source.split(':')[0]}: the tree's manifest and the image's config`, async (tt) => {
    const image = await importImage(source, 'mgtest');
    const fromDir = (await manifestFromDirectory(tree, { name: 'mgtest' })).manifest;
    // The directory import records no xattrs yet; podman's layer keeps them (checked below).
    const strip = (es: typeof fromDir.entries) => es.slice(1).map((e) => ({ ...e, xattrs: undefined }));
    tt.same(strip(image.manifest.entries), strip(fromDir.entries), 'every entry below the root, as the tree has it');
    const tool = image.manifest.entries.find((e) => e.path === '/usr/bin/tool');
    tt.ok(tool && 'xattrs' in tool && tool.xattrs?.some((x) => x.key === 'security.capability'), 'the file capability came through podman');
    tt.same(image.config, { Entrypoint: ['/usr/bin/tool'], Cmd: ['/bin/sh', '-c', 'echo hi'], Env: ['FOO=bar'], WorkingDir: '/etc', User: '1234' });
    tt.equal(image.layers.length, 1);
    tt.match(image.layers[0]!.diffId, /^sha256:[0-9a-f]{64}$/);
    const wanted = new Map<string, number>();
    for (const e of image.manifest.entries) if (e.type === 'file' && e.digest) wanted.set(e.digest, e.size);
    const total = wanted.size;
    let got = 0;
    for await (const o of image.provider.objects(wanted)) {
      let n = 0;
      for await (const c of o.chunks) n += c.length;
      tt.equal(n, o.size, `object ${o.digest.slice(0, 12)}: all its bytes`);
      wanted.delete(o.digest);
      got++;
    }
    tt.equal(got, total, 'a second read yields every object once');
  });
}

t.test('a blob that does not match its digest is refused, naming it', async (tt) => {
  const bad = join(dir, 'bad');
  cpSync(join(dir, 'ocidir'), bad, { recursive: true });
  const index = JSON.parse(readFileSync(join(bad, 'index.json'), 'utf8'));
  const manifest = JSON.parse(readFileSync(join(bad, 'blobs/sha256', index.manifests[0].digest.slice(7)), 'utf8'));
  const layer = join(bad, 'blobs/sha256', manifest.layers[0].digest.slice(7));
  const bytes = readFileSync(layer);
  bytes[bytes.length - 20] ^= 0xff;
  writeFileSync(layer, bytes);
  await tt.rejects(importImage(`oci:${bad}`, 'bad'), { message: new RegExp(`layer blob blobs/sha256/${manifest.layers[0].digest.slice(7)} hashes to sha256:[0-9a-f]{64}, not its digest|not valid gzip`) });
  const config = join(bad, 'blobs/sha256', manifest.config.digest.slice(7));
  cpSync(join(dir, 'ocidir'), bad, { recursive: true });
  writeFileSync(config, readFileSync(config, 'utf8').replace('FOO=bar', 'FOO=baz'));
  await tt.rejects(importImage(`oci:${bad}`, 'bad'), { message: /\(the config\) hashes to sha256:[0-9a-f]{64}, not its digest: it is corrupt/ });
  tt.ok(readdirSync(bad).includes('oci-layout'));
});
