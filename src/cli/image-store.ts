// `mountgate image add|ls|rm`: your images in the broker's store. `add`
// builds the manifest of a directory (or reads one from a file), registers it
// with AddImage and uploads only the objects the broker asks for; `run
// --image` then mounts it (see main.ts).
import { lstatSync, readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { lookupAccount } from '../accounts/load.js';
import { invertIdMap, isInitialIdMap, namespaceMap, parseIdMapText, showIdMap } from '../client/idmaps.js';
import { listedNames } from '../client/image-ref.js';
import { directorySize, findObjects, manifestFromDirectory, manifestObjects, resolveImageRef, uploadImage } from '../client/images.js';
import { proveWith } from '../client/prover.js';
import { parseManifest } from '../manifest/load.js';
import { addArchive, archiveOptions, isArchiveSource } from './import.js';
import type { IdRange, Manifest } from '../schema/types.generated.js';
import { ImportProgress, stderrSink } from './progress.js';
import { say, withBroker } from './session.js';
import { forgetSidecars, sidecarDir, type ListedImage } from '../import/sidecar.js';

/** forgetSidecars, where a failure only warns: the broker's change is made, only what the client kept beside is left over. */
async function forgetKept(listing: () => Promise<ListedImage[]>, replaced?: ListedImage): Promise<void> {
  try {
    await forgetSidecars(listing, replaced);
  } catch (err) {
    process.stderr.write(`mountgate: warning: what imports kept in ${sidecarDir()} could not be brought up to date (${(err as Error).message})\n`);
  }
}
import { trace } from '../trace.js';
import { DigestCache } from '../client/digest-cache.js';
import type { MountgateBroker } from '../client/broker.js';

const MiB = 1024 * 1024;

/** The most time spent walking a directory for its total size (beyond it: no estimate). */
const prewalkBudgetMs = 1000;

/** How the owners of a directory's files become the image's owners, and a sentence that says so. */
export interface OwnerMapping {
  uidMap?: IdRange[];
  gidMap?: IdRange[];
  how: string;
}

/**
 * On the host: your uid as 0 and your subordinate ids as 1.. (what `mountgate
 * run` shows), or with keepIds the host's ids. Inside a user namespace (podman
 * unshare, unshare --map-auto), the ids are already the namespace's: owners
 * as that namespace shows them, or with keepIds as its parent sees them
 * (through /proc/self/uid_map and gid_map).
 */
export function ownerMapping(keepIds: boolean): OwnerMapping {
  const uidNs = parseIdMapText(readFileSync('/proc/self/uid_map', 'utf8'));
  const gidNs = parseIdMapText(readFileSync('/proc/self/gid_map', 'utf8'));
  if (!isInitialIdMap(uidNs)) {
    const where = `this process runs in a user namespace (uid_map ${showIdMap(uidNs)}; gid_map ${showIdMap(gidNs)})`;
    if (!keepIds) return { how: `${where}: owners as this namespace shows them (as ls -ln shows them here)` };
    // Ids on disk as seen here ("to") become the parent's ids ("from").
    return { uidMap: invertIdMap(uidNs), gidMap: invertIdMap(gidNs), how: `${where}: owners as the parent namespace sees them (--keep-ids); others as 65534` };
  }
  if (keepIds) return { how: 'owners as on the host (--keep-ids)' };
  const uid = process.getuid!();
  const account = lookupAccount(uid);
  const uidMap = account ? namespaceMap(uid, account.subuids) : [{ from: 0, to: uid, count: 1 }];
  const gidMap = account ? namespaceMap(account.gid, account.subgids) : [{ from: 0, to: process.getgid!(), count: 1 }];
  return { uidMap, gidMap, how: `your ids as \`mountgate run\` shows them (image uid←host uid: ${showIdMap(uidMap)}; gid: ${showIdMap(gidMap)}); other owners as 65534` };
}

/** What --dry-run prints: the image a directory makes, without asking the broker. */
function dryRunSummary(manifest: Manifest, how: string): Record<string, unknown> {
  const byType: Record<string, number> = {};
  const uids: Record<string, number> = {};
  const gids: Record<string, number> = {};
  let withXattrs = 0;
  for (const e of manifest.entries) {
    byType[e.type] = (byType[e.type] ?? 0) + 1;
    if ('uid' in e && e.uid !== undefined) uids[e.uid] = (uids[e.uid] ?? 0) + 1;
    if ('gid' in e && e.gid !== undefined) gids[e.gid] = (gids[e.gid] ?? 0) + 1;
    if ('xattrs' in e && e.xattrs?.length) withXattrs++;
  }
  const objects = manifestObjects(manifest);
  let bytes = 0;
  for (const size of objects.values()) bytes += size;
  return { name: manifest.name, entries: manifest.entries.length, byType, withXattrs, objects: objects.size, bytes, owners: how, uids, gids };
}

interface AddOptions {
  objects?: string;
  name?: string;
  json?: boolean;
  keepIds?: boolean;
  dryRun?: boolean;
  /** false with --no-digest-cache. */
  digestCache?: boolean;
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
    .option('--keep-ids', 'for a directory: record owners as the parent of your namespace sees them (on the host: the host\'s ids), not as `mountgate run` shows them')
    .option('--no-digest-cache', 'hash every file (of a directory, or an archive file) again, neither using nor updating what the client cached of an earlier import')
    .option('--dry-run', 'for a directory: build the manifest and say what the image would hold (entries, objects, bytes, owners and how ids were mapped); send nothing')
    .option('--json', 'print {"id", "uploaded": {"objects", "bytes"}, "proven": {"objects", "bytes"}, "digestCache"?: {"hits", "misses"}} (with --dry-run: the summary), and progress as JSON events on standard error')
    .addHelpText(
      'after',
      `
Owners, from a directory:
  on the host              files you own become 0 in the image and files of
                           your subordinate ids 1.. (what \`mountgate run\`
                           shows), so \`run --image\` shows them the same way;
                           any other owner becomes 65534.
  in a user namespace      (podman unshare, unshare --user --map-auto) the ids
                           on disk are already the namespace's: they are
                           recorded as that namespace shows them (as ls -ln
                           does there).
  --keep-ids               the ids one level up instead: the host's on the
                           host, the parent namespace's inside one.
--dry-run shows which of these applied and the owners found.

Extended attributes (user.*, security.* such as file capabilities and
SELinux labels, ACLs; trusted.* only as root) are recorded with their
files; one that cannot be read is an error that names the file.

The broker hashes the files itself: each is passed to it as an open file
(ProveObjects; "proven" in --json), it keeps a copy only of what its store
lacks, and the image then lacks nothing. From a broker or a policy without
ProveObjects, the files are hashed here and what the broker lacks, or you
have not uploaded yourself, is sent after ("uploaded"). A file unchanged since an earlier import of yours (same inode, size,
mtime and ctime) is not read again: its digest comes from
$XDG_CACHE_HOME/mountgate (--no-digest-cache to hash every file).

Progress goes to standard error: a bar on a terminal (entries, bytes, rate,
and an estimate when the total is known: an archive file's size, or a
directory's, from a walk of at most a second before the import), nothing
when it is not a terminal, and with --json one event a line (the first and
the last of each phase always, at most two a second between):
  {"event":"read","entries":N,"bytes":N,"totalBytes"?:N,"rate":B/s,
   "etaSeconds"?:N,"elapsedSeconds":N,"done"?:true}
  {"event":"upload","objects":N,"totalObjects":N,"bytes":N,"totalBytes":N,
   "rate":B/s,"etaSeconds"?:N,"elapsedSeconds":N,"done"?:true}
"read" bytes are the archive's as stored (compressed or not), or a
directory's file contents hashed; "upload" counts what the broker asked for.

Examples:
  mountgate image add ./rootfs --name tools
  podman unshare mountgate image add ./rootfs --dry-run
  mountgate image add image.json --objects ./objects --json`,
    )
    .action(async (source: string, opts: AddOptions) => {
      if (isArchiveSource(source)) return addArchive(program, source, opts);
      const progress = new ImportProgress(stderrSink(Boolean(opts.json) && !opts.dryRun));
      let manifest: Manifest | undefined;
      let sources: Map<string, string | Buffer> = new Map();
      let digestCache: DigestCache | undefined;
      /** A directory's manifest: made before the call for --dry-run (hashed here), else once connected (the broker hashes). */
      let fromDirectory: ((b: MountgateBroker | undefined) => Promise<Manifest>) | undefined;
      /** What ProveObjects took (the broker hashed and held it for AddImage), beside what PutObjects uploaded. */
      const proven = { objects: 0, bytes: 0 };
      if (lstatSync(source).isDirectory()) {
        if (opts.objects) image.error('mountgate: --objects is for a manifest file; a directory holds its own contents', { exitCode: 2 });
        const owners = ownerMapping(Boolean(opts.keepIds));
        // The total for an estimate, when the walk for it is cheap (see directorySize).
        const size = progress.active ? directorySize(source, prewalkBudgetMs) : undefined;
        if (size) progress.readTotal(size.bytes);
        digestCache = opts.digestCache === false ? undefined : DigestCache.load();
        const cache = digestCache;
        fromDirectory = async (b) => {
          // Connected, and allowed: the broker hashes what the cache does not know (it would hash it again anyway).
          const prover = b ? await proveWith(b, proven) : undefined;
          let made: Manifest;
          ({ manifest: made, sources } = await manifestFromDirectory(source, {
            ...(opts.name ? { name: opts.name } : {}),
            ...(owners.uidMap ? { uidMap: owners.uidMap } : {}),
            ...(owners.gidMap ? { gidMap: owners.gidMap } : {}),
            onProgress: (entries, bytes) => progress.readAt(entries, bytes),
            ...(cache ? { digestCache: cache } : {}),
            ...(prover ? { prover } : {}),
          }));
          progress.done();
          cache?.save();
          trace(`manifest built${cache ? ` (digest cache: ${cache.hits} hits, ${cache.misses} misses)` : ''}`);
          return made;
        };
        if (opts.dryRun) {
          manifest = await fromDirectory(undefined);
          const summary = dryRunSummary(manifest, owners.how);
          if (opts.json) return say(JSON.stringify(summary));
          const counts = (m: Record<string, number>) => Object.entries(m).map(([k, n]) => `${k} (${n})`).join(', ');
          say(`image ${manifest.name}: ${summary.entries} entries (${counts(summary.byType as Record<string, number>)}), ${summary.withXattrs} with xattrs`);
          say(`contents: ${summary.objects} objects, ${humanBytes(summary.bytes as number)}`);
          say(`owners: ${owners.how}`);
          say(`uids: ${counts(summary.uids as Record<string, number>)}`);
          say(`gids: ${counts(summary.gids as Record<string, number>)}`);
          return;
        }
      } else {
        if (opts.dryRun) image.error('mountgate: --dry-run is for a directory', { exitCode: 2 });
        manifest = parseManifest(readFileSync(source));
        if (opts.name) manifest = { ...manifest, name: opts.name };
        sources = opts.objects ? findObjects(opts.objects, manifestObjects(manifest).keys()) : new Map();
      }
      const result = await withBroker(program, async (b) => {
        const m = manifest ?? (await fromDirectory!(b));
        const uploaded = await uploadImage(b, m, sources, { onProgress: (p) => progress.upload(p), onAdded: () => trace('AddImage answered') });
        // The name (and the image) now mean this tree, with no config or layers: what an import kept for either goes.
        await forgetKept(() => b.listImages(), { id: uploaded.imageId, ...(m.name === undefined ? {} : { name: m.name }) });
        return uploaded;
      }).finally(() => progress.done());
      trace('uploaded');
      const cached = digestCache ? { digestCache: { hits: digestCache.hits, misses: digestCache.misses } } : {};
      say(opts.json ? JSON.stringify({ id: result.imageId, uploaded: result.uploaded, proven, ...cached }) : result.imageId);
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
        say([shortId(i.id), (listedNames(i).join(',') || '-').padEnd(20), String(i.entries).padStart(8), String(i.objects).padStart(8), String(i.missing).padStart(8), humanBytes(i.bytes).padStart(10), `  ${i.added}`].join(' '));
      }
    });

  image
    .command('rm')
    .description('Remove images of yours (contents no image needs any more are deleted).')
    .argument('<image...>', 'an id, an id prefix of at least 8 characters, or a name')
    .addHelpText(
      'after',
      '\nBy name, only that name goes while the image has other names of yours (image ls lists them);' +
        ' with its last name, or by id, the image goes: its registration, every name, and its share of your quota.' +
        '\nWhat an import kept for a name in $XDG_DATA_HOME/mountgate/images (its config, its layers) goes with the name.\n\nExample:\n  mountgate image rm tools',
    )
    .action(async (refs: string[]) => {
      await withBroker(program, async (b) => {
        const images = await b.listImages();
        const found = refs.map((r) => resolveImageRef(images, r));
        try {
          for (const f of found) {
            if (f.byName) await b.removeImageName(f.name!);
            else await b.removeImage(f.id);
            say(f.id);
          }
        } finally {
          // What imports kept for the images the broker no longer lists (those removed before a failure too).
          await forgetKept(() => b.listImages());
        }
      });
    });
}
