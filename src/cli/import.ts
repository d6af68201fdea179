// `mountgate image add` of archives: a layer tarball (FILE.tar, .tar.gz,
// .tar.zst, or - for standard input). Parsed here, as the user; the broker
// gets only the manifest and the contents it asks for. Ownership is kept as
// the archive says (a layer's ids are the container's ids).
import { closeSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import type { Command } from 'commander';
import { connect } from '../client/broker.js';
import { MountgateError } from '../errors.js';
import { fileInput, stdinInput, type ArchiveInput } from '../import/input.js';
import { importTarball, tarballFromLayer } from '../import/tarball.js';
import { archiveStat, loadScan, saveScan } from '../import/scan-cache.js';
import { takeBack, uploadImported, type ImportUploadProgress } from '../import/upload.js';
import { ContentProver } from '../import/prove.js';
import { sniffCompression } from '../import/decompress.js';
import { imageName, importImage, isImageReference, type ImageConfig } from '../import/oci.js';
import { keptManifest, lostContents } from '../import/kept.js';
import { keepSidecar, type ImageSidecar } from '../import/sidecar.js';
import { ImportProgress, stderrSink } from './progress.js';
import { trace } from '../trace.js';

const MiB = 1024 * 1024;

/** The bytes a scan of `source` reads, when it is a file (or standard input redirected from one); oci: layouts say theirs as they go. */
function sourceSize(source: string): number | undefined {
  if (source === '-') {
    const st = fstatSync(0);
    return st.isFile() ? st.size : undefined;
  }
  const path = source.startsWith('oci-archive:') ? source.slice(12) : source.startsWith('docker-archive:') ? source.slice(15) : isImageReference(source) ? undefined : source;
  try {
    return path === undefined ? undefined : statSync(path).size;
  } catch {
    // The import itself says what is wrong with the path.
    return undefined;
  }
}

export interface ArchiveAddOptions {
  name?: string;
  json?: boolean;
  skipDevices?: boolean;
  memory?: string;
  /** false with --no-digest-cache: read the archive even if an earlier scan of it is cached. */
  digestCache?: boolean;
}

/** Whether `source` names an archive rather than a directory or a manifest: "-", or a file that starts as tar, gzip or zstd. */
export function isArchiveSource(source: string): boolean {
  if (source === '-' || isImageReference(source)) return true;
  let st;
  try {
    st = statSync(source);
  } catch {
    return false;
  }
  if (!st.isFile()) return false;
  const head = Buffer.alloc(512);
  const fd = openSync(source, 'r');
  let n: number;
  try {
    n = readSync(fd, head, 0, 512, 0);
  } finally {
    closeSync(fd);
  }
  const compression = sniffCompression(head.subarray(0, n), source);
  return compression !== 'none' || (n === 512 && head.toString('latin1', 257, 262) === 'ustar');
}

/** Adds what the archive options of `image add` need (called where the command is defined). */
export function archiveOptions(cmd: Command): Command {
  return cmd
    .option('--skip-devices', 'for an archive: drop device nodes (an image cannot hold ones that can be used) instead of refusing the archive')
    .option('--memory <MiB>', 'for an archive on a pipe: the most file contents kept in memory for the upload (default 512)')
    .addHelpText(
      'after',
      `
A layer tarball (FILE.tar, FILE.tar.gz, FILE.tar.zst, or - for standard
input; GNU, ustar and PAX, with xattrs, POSIX ACLs, hardlinks and sparse
files) becomes an image as it is, owners included: its ids are the
container's ids, and so are the ids in its ACLs (SCHILY.acl.access and
.default, kept as the xattrs system.posix_acl_access and
system.posix_acl_default; a name in an ACL entry without its id is resolved
on this machine, as tar -x would). It is never unpacked, and read once:
each file's content goes to the broker as it streams by (ProveObjects:
the broker hashes it and keeps a copy only of what its store lacks;
"proven" in --json). From a pipe, or from a broker or policy without
ProveObjects, each file is hashed here instead, and the contents the broker
lacks are read from the archive again (from memory for a pipe; "uploaded").
An archive file unchanged since
an earlier import of yours (same inode, size, mtime and ctime) is not read
again: what its scan found is kept in $XDG_CACHE_HOME/mountgate/scans
(--no-digest-cache to read it anyway).
Ctrl-C stops the import; an image it registered is removed again.

  mountgate image add layer.tar.zst --name base
  podman export CONTAINER | mountgate image add - --name snapshot

Container images: oci:DIR[:TAG], oci-archive:FILE, docker-archive:FILE (what
\`podman save\` writes) and podman:IMAGE (runs \`podman save\` as you). Every
blob is checked against its digest and every layer against its diff ID; the
layers are applied in order with their whiteouts. The image config
(Entrypoint, Cmd, Env, WorkingDir, User), which \`run --image NAME\` follows,
and what rebuilds each layer are kept under the image's name in
$XDG_DATA_HOME/mountgate/images/names (~/.local/share by default): imports
that flatten to the same files share one image id, yet each name keeps its
own. Importing again under a name replaces what it kept; the broker keeps
one name per image, so importing the same files under a second name renames
the image, and the first name's record goes. \`image rm\` removes the
records with the image. The contents of files a later layer deleted or
replaced, which the flattened image lacks, go to a hidden image tied to it
(not listed, counted in your limits, removed with it), so that
\`image export-layer\` rebuilds every layer.

  mountgate image add docker-archive:saved.tar --name app
  mountgate image add podman:docker.io/library/alpine:latest`,
    );
}

function defaultName(source: string): string {
  if (source === '-') return 'stdin';
  return basename(source).replace(/\.(tar(\.(gz|zst|zstd))?|tgz|tzst)$/, '') || 'image';
}

/** `image add ARCHIVE`: prints the image id (or JSON with --json). */
export async function addArchive(program: Command, source: string, opts: ArchiveAddOptions): Promise<void> {
  const controller = new AbortController();
  const onSignal = () => controller.abort(new MountgateError('Internal', 'interrupted; nothing was registered'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const progress = new ImportProgress(stderrSink(Boolean(opts.json)));
  try {
    const memory = opts.memory === undefined ? undefined : Number(opts.memory);
    if (memory !== undefined && !(memory > 0)) throw new MountgateError('InvalidRequest', `--memory ${opts.memory}: give a number of MiB`);
    // Connected first: the broker hashes the contents as the archive is read, when its policy lets us (GetInfo's methods).
    const busAddress = program.opts<{ busAddress?: string }>().busAddress;
    const broker = await connect(busAddress ? { busAddress } : {});
    let proving: boolean;
    try {
      proving = await broker.allows('ProveObjects');
    } catch (err) {
      broker.close();
      throw err;
    }
    /** What ProveObjects took as the archive was read (the broker hashed and held it for AddImage), beside what PutObjects uploaded. */
    const proven = { objects: 0, bytes: 0 };
    const scan = {
      ...(proving ? { prover: () => new ContentProver(broker, proven) } : {}),
      ...(opts.skipDevices ? { skipDevices: true } : {}),
      ...(memory ? { memoryLimit: memory * MiB } : {}),
      onEntry: () => progress.entry(),
      onRead: (bytes: number) => progress.readBytes(bytes),
      onTotal: (bytes: number) => progress.readTotal(bytes),
      signal: controller.signal,
    };
    const isImage = isImageReference(source);
    const input: ArchiveInput = source === '-' ? stdinInput() : fileInput(source);
    const size = sourceSize(source);
    if (size !== undefined) progress.readTotal(size);
    // A layer tarball named on the command line: an unchanged one is not read again (src/import/scan-cache.ts).
    const archive = !isImage && source !== '-' && opts.digestCache !== false ? archiveStat(source) : undefined;
    const scanOptions = { skipDevices: Boolean(opts.skipDevices) };
    const startedNs = BigInt(Date.now()) * 1_000_000n;
    const cached = archive && loadScan(archive, scanOptions);
    let imported;
    try {
      if (isImage) {
        imported = await importImage(source, opts.name ?? imageName(source), scan);
      } else if (cached) {
        imported = tarballFromLayer(input, opts.name ?? defaultName(source), cached.layer, cached.compression, controller.signal);
      } else {
        imported = await importTarball(input, opts.name ?? defaultName(source), scan);
        if (archive) saveScan(archive, scanOptions, { layer: imported.layer, compression: imported.compression }, startedNs);
      }
    } catch (err) {
      broker.close();
      throw err;
    }
    trace('archive read');
    let result;
    let kept: string | undefined;
    let summary: Record<string, unknown>;
    try {
      const upload = { onProgress: (p: ImportUploadProgress) => progress.upload(p), signal: controller.signal };
      progress.done();
      result = await uploadImported(broker, imported.manifest, imported.provider, upload);
      trace('uploaded');
      // What a layer needs and the flattened image lacks goes in a hidden image kept for it (src/import/kept.ts).
      const lost = lostContents('config' in imported ? imported.layers.map((l) => l.split) : [imported.layer.split], imported.manifest);
      if (lost.size > 0) {
        try {
          kept = (await uploadImported(broker, keptManifest(lost, result.imageId), imported.provider, upload)).imageId;
        } catch (err) {
          await takeBack(broker, result);
          throw err;
        }
      }
      progress.done();
      const imageId = result.imageId;
      const name = imported.manifest.name!;
      /** Keeps the config and layer splits under the image's name (src/import/sidecar.ts); returns the layers as kept. */
      const keep = async (data: { config?: ImageConfig }, layers: Parameters<typeof keepSidecar>[1]): Promise<ImageSidecar['layers']> => {
        try {
          const done = await keepSidecar({ name, imageId, source, ...data, ...(kept ? { kept } : {}) }, layers, imported.manifest, () => broker.listImages());
          if (!done.kept) process.stderr.write(`mountgate: warning: the name ${name} was given to another image meanwhile (an import at the same time); what this import keeps beside the image (its config, its layers) was not kept\n`);
          return done.layers;
        } catch (err) {
          // The image is registered and whole; only what the client keeps beside it is lost.
          process.stderr.write(`mountgate: warning: the image's config and layers could not be kept for run and image export-layer (${(err as Error).message})\n`);
          return layers.map(({ split: _split, ...l }) => l);
        }
      };
      if ('config' in imported) {
        const layers = await keep({ config: imported.config }, imported.layers);
        summary = { id: imageId, uploaded: result.uploaded, proven, entries: imported.manifest.entries.length, ...(kept ? { kept } : {}), layers: layers.map(({ split: _s, ...l }) => l), config: imported.config };
      } else {
        const l = imported.layer;
        await keep({}, [{ diffId: l.diffId, entries: l.entries.length, ...(l.split ? { split: l.split } : {}) }]);
        summary = { id: imageId, uploaded: result.uploaded, proven, entries: imported.manifest.entries.length, diffId: l.diffId, compression: imported.compression, skippedDevices: l.skippedDevices, ignored: Object.fromEntries(l.ignored), ...(archive ? { scanCache: cached ? 'hit' : 'miss' } : {}) };
        for (const [k, n] of l.ignored) if (!opts.json) process.stderr.write(`mountgate: warning: ${n} entr${n === 1 ? 'y has' : 'ies have'} PAX ${k}, which an image does not keep\n`);
        if (l.skippedDevices > 0 && !opts.json) process.stderr.write(`mountgate: dropped ${l.skippedDevices} device node(s) (--skip-devices)\n`);
      }
    } finally {
      broker.close();
    }
    process.stdout.write(`${opts.json ? JSON.stringify(summary) : result.imageId}\n`);
  } catch (err) {
    progress.done();
    if (controller.signal.aborted) throw controller.signal.reason;
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
