// `mountgate image add|ls|rm`: your images in the broker's store. `add`
// builds the manifest of a directory (or reads one from a file), registers it
// with AddImage and uploads only the objects the broker asks for; `run
// --image` then mounts it (see main.ts).
import { lstatSync, readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { lookupAccount } from '../accounts/load.js';
import { connect, type MountgateBroker } from '../client/broker.js';
import { namespaceMap } from '../client/idmaps.js';
import { findObjects, manifestFromDirectory, manifestObjects, resolveImageRef, uploadImage, type UploadProgress } from '../client/images.js';
import { parseManifest } from '../manifest/load.js';
import { addArchive, archiveOptions, isArchiveSource } from './import.js';
import type { IdRange, Manifest } from '../schema/types.generated.js';

const MiB = 1024 * 1024;

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

async function withBroker<T>(program: Command, fn: (b: MountgateBroker) => Promise<T>): Promise<T> {
  const busAddress = program.opts<{ busAddress?: string }>().busAddress;
  const broker = await connect(busAddress ? { busAddress } : {});
  try {
    return await fn(broker);
  } finally {
    broker.close();
  }
}

/** Your ids as `mountgate run` shows them: your uid as 0, your subuids as 1.. */
function rootlessIds(): { uidMap: IdRange[]; gidMap: IdRange[] } {
  const uid = process.getuid!();
  const account = lookupAccount(uid);
  if (!account) return { uidMap: [{ from: 0, to: uid, count: 1 }], gidMap: [{ from: 0, to: process.getgid!(), count: 1 }] };
  return { uidMap: namespaceMap(uid, account.subuids), gidMap: namespaceMap(account.gid, account.subgids) };
}

/** A progress line on a terminal, rewritten in place; nothing otherwise. */
function progressLine(): { update(p: UploadProgress): void; done(): void } {
  if (!process.stderr.isTTY) return { update() {}, done() {} };
  let last = 0;
  let shown = false;
  return {
    update(p) {
      const now = Date.now();
      if (now - last < 100 && p.objects < p.totalObjects) return;
      last = now;
      shown = true;
      process.stderr.write(`\ruploading: ${p.objects}/${p.totalObjects} objects, ${(p.bytes / MiB).toFixed(1)}/${(p.totalBytes / MiB).toFixed(1)} MiB\x1b[K`);
    },
    done() {
      if (shown) process.stderr.write('\n');
    },
  };
}

interface AddOptions {
  objects?: string;
  name?: string;
  json?: boolean;
  keepIds?: boolean;
}

function shortId(id: string): string {
  return id.slice(0, 12);
}

function humanBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < MiB) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * MiB) return `${(n / MiB).toFixed(1)} MiB`;
  return `${(n / 1024 / MiB).toFixed(1)} GiB`;
}

export function register(program: Command): void {
  const image = program.commands.find((c) => c.name() === 'image') ?? program.command('image');
  image.description('Composefs images: build and inspect them locally; add, list and remove them in the broker\'s store; run them with `mountgate run --image`.');

  archiveOptions(image
    .command('add'))
    .description('Register an image with the broker and upload the file contents it lacks; prints the image id.')
    .argument('<source>', 'a directory (the image is its tree), a manifest JSON file, or a layer tarball (- for standard input)')
    .option('--objects <dir>', 'for a manifest file: where the contents are, as DIR/xx/rest by fs-verity digest (mkcomposefs --digest-store)')
    .option('--name <name>', 'the image name (default: the directory name, or the manifest\'s)')
    .option('--keep-ids', 'for a directory: record owners as on the host, not as `mountgate run` shows them')
    .option('--json', 'print {"id", "uploaded": {"objects", "bytes"}}')
    .addHelpText(
      'after',
      `
From a directory, files you own become owned by root (0) in the image and
files of your subordinate ids become 1.. (what \`mountgate run\` shows), so
\`run --image\` shows them the same way. Only contents the broker lacks, or
that you have not uploaded yourself, are sent.

Examples:
  mountgate image add ./rootfs --name tools
  mountgate image add image.json --objects ./objects --json`,
    )
    .action(async (source: string, opts: AddOptions) => {
      if (isArchiveSource(source)) return addArchive(program, source, opts);
      let manifest: Manifest;
      let sources: Map<string, string | Buffer>;
      if (lstatSync(source).isDirectory()) {
        if (opts.objects) image.error('mountgate: --objects is for a manifest file; a directory holds its own contents', { exitCode: 2 });
        ({ manifest, sources } = await manifestFromDirectory(source, { ...(opts.name ? { name: opts.name } : {}), ...(opts.keepIds ? {} : rootlessIds()) }));
      } else {
        manifest = parseManifest(readFileSync(source));
        if (opts.name) manifest = { ...manifest, name: opts.name };
        sources = opts.objects ? findObjects(opts.objects, manifestObjects(manifest).keys()) : new Map();
      }
      const line = progressLine();
      const result = await withBroker(program, (b) => uploadImage(b, manifest, sources, { onProgress: (p) => line.update(p) })).finally(() => line.done());
      say(opts.json ? JSON.stringify({ id: result.imageId, uploaded: result.uploaded }) : result.imageId);
    });

  image
    .command('ls')
    .description('List your images in the broker\'s store.')
    .option('--json', 'print the broker\'s list as JSON')
    .addHelpText('after', '\nMISSING counts objects still to upload (run `image add` again).\n\nExample:\n  mountgate image ls')
    .action(async (opts: { json?: boolean }) => {
      const images = await withBroker(program, (b) => b.listImages());
      if (opts.json) return say(JSON.stringify(images));
      say(['ID'.padEnd(12), 'NAME'.padEnd(20), 'ENTRIES'.padStart(8), 'OBJECTS'.padStart(8), 'MISSING'.padStart(8), 'SIZE'.padStart(10), '  ADDED'].join(' '));
      for (const i of images) {
        say([shortId(i.id), (i.name ?? '-').padEnd(20), String(i.entries).padStart(8), String(i.objects).padStart(8), String(i.missing).padStart(8), humanBytes(i.bytes).padStart(10), `  ${i.added}`].join(' '));
      }
    });

  image
    .command('rm')
    .description('Remove images of yours (contents no image needs any more are deleted).')
    .argument('<image...>', 'an id, an id prefix of at least 8 characters, or a name')
    .addHelpText('after', '\nExample:\n  mountgate image rm tools')
    .action(async (refs: string[]) => {
      await withBroker(program, async (b) => {
        const images = await b.listImages();
        const ids = refs.map((r) => resolveImageRef(images, r).id);
        for (const id of ids) {
          await b.removeImage(id);
          say(id);
        }
      });
    });
}
