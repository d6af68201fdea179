// `mountgate image export-layer IMAGE N`: the tar stream of layer N of an
// imported image, rebuilt byte for byte (its sha256 is the layer's diff ID),
// from the tar split kept at import (src/import/tarsplit.ts) and the
// contents read back through a mount of the image, in a user namespace of
// the caller's where every file of the image can be read.
import { mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { lookupAccount } from '../accounts/load.js';
import { closeFd, connect } from '../client/broker.js';
import { namespaceMap } from '../client/idmaps.js';
import { resolveImageRef } from '../client/image-ref.js';
import { MountgateError } from '../errors.js';
import { readSidecar, withSidecarLock } from '../import/sidecar.js';
import { decodeSplit } from '../import/tarsplit.js';
import { UsageError } from './usage.js';

const innerPath = new URL('../import/export-inner.js', import.meta.url).pathname;

export function register(program: Command): void {
  const image = program.commands.find((c) => c.name() === 'image') ?? program.command('image');
  image
    .command('export-layer')
    .description('write layer N of an imported image as the exact tar stream it was imported from (its sha256 is the layer\'s diff ID)')
    .argument('<image>', 'an id, an id prefix of at least 8 characters, or a name')
    .argument('<n>', 'which layer: 0 is the lowest (the first the image applies)')
    .addHelpText('after', `
The split of every layer (its headers and padding as they were, its contents
by digest) is kept under the image's name, in
$XDG_DATA_HOME/mountgate/images/names, when \`image add\` imports a tarball or
a container image; the contents are read back through a mount of the image.
The contents of files a later layer deleted or replaced are kept by the
broker in a hidden image tied to this one (not listed by \`image ls\`, counted
in your limits, removed with the image), mounted beside it for the export.

Example:
  mountgate image export-layer app 0 > layer.tar && sha256sum layer.tar`)
    .action(async (ref: string, n: string, _opts: unknown) => {
      if (!/^\d+$/.test(n)) throw new UsageError(`layer ${n}: give its index, 0 for the lowest`);
      if (process.stdout.isTTY) throw new UsageError('the layer is a tar stream: redirect standard output to a file or a pipe');
      const busAddress = program.opts<{ busAddress?: string }>().busAddress;
      const broker = await connect(busAddress ? { busAddress } : {});
      try {
        const image = resolveImageRef(await broker.listImages(), ref);
        const id = image.id;
        // Shared: an import of the same name at once waits, so the record's layer files stay until they are read.
        await withSidecarLock('shared', async () => {
          const found = readSidecar(image);
          if (!found) throw new MountgateError('NotFound', `image ${ref} was not imported from a tarball or container image here: there is no layer to export`);
          const { sidecar } = found;
          const layer = sidecar.layers[Number(n)];
          if (!layer) throw new MountgateError('NotFound', `image ${ref} has ${sidecar.layers.length} layer(s) (0..${sidecar.layers.length - 1}), not ${n}`);
          if (!layer.split) throw new MountgateError('NotFound', `layer ${n} of image ${ref} was imported without its split, so it cannot be rebuilt; import it again`);
          const splitFile = join(found.layerDir, layer.split);
          const pathsFile = join(found.layerDir, 'paths.json');
          // Every content the layer needs must be in the image or in the hidden one kept for it: said before a byte is written.
          const paths = JSON.parse(readFileSync(pathsFile, 'utf8')) as Record<string, unknown>;
          const missing = decodeSplit(readFileSync(splitFile)).find((r) => 'file' in r && r.file.digest && !(r.file.digest in paths));
          if (missing && 'file' in missing && !sidecar.kept) throw new MountgateError('NotFound', `layer ${n} of image ${ref} has a file (content ${missing.file.digest}) that a later layer deleted or replaced, and this image was imported without the hidden image that keeps such contents; import it again`);
          const mounts: { fd: number; target: string; writable: false }[] = [];
          const targets: string[] = [];
          const mountAt = async (imageId: string) => {
            const { mountFd } = await broker.mountImage(imageId, {});
            const target = mkdtempSync(join(tmpdir(), 'mountgate-export.'));
            mounts.push({ fd: mountFd, target, writable: false });
            targets.push(target);
            return target;
          };
          const uid = process.getuid!();
          const account = lookupAccount(uid);
          if (!account) throw new UsageError(`uid ${uid} has no entry in /etc/passwd`);
          let handed = false;
          try {
            const root = await mountAt(id);
            const keptRoot = missing ? await mountAt(sidecar.kept!) : '-';
            const { runInNamespace } = await import('../client/namespace.js');
            // The mount fds are runInNamespace's from here on.
            handed = true;
            const code = await runInNamespace({
              uidMap: namespaceMap(uid, account.subuids),
              gidMap: namespaceMap(account.gid, account.subgids),
              mounts: [],
              images: mounts,
              command: [process.execPath, innerPath, splitFile, pathsFile, root, keptRoot, layer.diffId],
              interactive: false,
            });
            process.exitCode = code;
          } finally {
            if (!handed) for (const m of mounts) closeFd(m.fd);
            for (const t of targets) rmdirSync(t);
          }
        });
      } finally {
        broker.close();
      }
    });
}
