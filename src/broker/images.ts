// The image side of the broker: builds (in build helper processes, queued
// fairly between users), the registry, the object store and its accounting. It decides
// nothing: the method records (methods.ts) ask src/policy/images.ts, and the
// pipeline audits. Quotas are computed from the registry at the moment of
// each decision, and the decision and the registration happen in one turn of
// the event loop, so concurrent calls cannot both pass a check that only one
// of them fits. An object is published only while an image still needs it,
// and objects no image needs are collected. The bookkeeping lives in the
// store database (src/store/db.ts); caller data is read only by upload
// helpers (upload-helper.ts), child processes started ahead of need
// (upload-helpers.ts) and killed at their deadlines.
import { randomBytes } from 'node:crypto';
import { closeSync, fstatSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { InternalError, InvalidRequestError, LimitExceededError, TimeoutError } from '../errors.js';
import type { ImageFacts, KeptFor, MountGrant, StoreUsage } from '../policy/images.js';
import { planComposefsMount, type Plan } from '../policy/plan.js';
import type { Policy } from '../schema/types.generated.js';
import type { KernelFeatures } from '../sys/features.js';
import * as sys from '../sys/syscalls.js';
import { ImageRegistry, type OwnedImage } from '../store/images.js';
import { digestPattern, ObjectStore } from '../store/objects.js';
import { defaultImageLimits } from '../policy/default.js';
import { FairQueue } from './fair-queue.js';
import { MemoryReturn } from './memory-return.js';
import { BuildHelpers } from './build-helpers.js';
import type { BuiltImage } from './image-builder.js';
import { UploadHelpers } from './upload-helpers.js';
import { HeldObjects } from './held.js';
import { BuildMemo, type MemoBuild } from './build-memo.js';
import { inTurns } from './turns.js';

export interface ImageDeps {
  stateDir: string;
  policy: () => Policy;
  features: KernelFeatures;
  /** How long a passed file may keep an upload helper silent before it is killed. */
  fdDeadlineMs: number;
  /** Told when the queued deletions of object files are done (for the audit). */
  onDeleted?: (report: { deleted: number; failed: string[] }) => void;
}

/** Object rows of a removed image deleted per transaction: a few ms of the event loop each. */
const rowsPerTurn = 1000;

/**
 * Object rows of an image being registered added per transaction, and rows
 * read per page of a missing or pending list: 1000 rows took 8 ms idle but
 * 80-150 ms with the machine loaded (the same as the whole 100k in one
 * transaction, 1.0 s idle, 8 s loaded, pro rata).
 */
const registerRowsPerTurn = 200;
const pageRows = 1000;

/** Objects of an upload batch published per turn (a rename and a few rows each): a few ms of the event loop. */
const publishPerTurn = 64;
/**
 * Holds adopted per turn: mostly proofs of objects the store has (three
 * statements on neighbouring rows each, no rename), so more per turn than a
 * publish; a rename each for the copies.
 */
const adoptPerTurn = 256;
/** Renames of adopted copies under way at once, on libuv's pool. */
const renamesAtOnce = 32;

/** How long a PutObjects stream may go without a byte before the call ends. */
export const streamIdleMs = 60_000;

/** What a batch handler of an upload helper's call (ImageService.drive) may ask of the call. */
interface DriveCall {
  /** Whether the call is over (answered or failed): nothing more is to be done for it. */
  settled(): boolean;
  /** Ends the call with this failure (the helper killed, its tmp files removed). */
  fail(err: Error): void;
}

/** A build's result, or what an earlier build of the same manifest found (its image stored). */
export type Built = BuiltImage | MemoBuild;

function imageBytesOf(built: Built): number {
  return 'image' in built ? built.image.length : built.imageBytes;
}

export function imageLimits(policy: Policy) {
  return { ...defaultImageLimits, ...policy.images };
}

/**
 * Checks that `fd` is a manifest the broker can read without risk: a memfd
 * sealed against writes, growth and shrinking (so it cannot stall a reader or
 * change under it), no bigger than the policy allows. Nothing of it is read.
 */
export function checkManifestFd(fd: number, maxBytes: number): number {
  const seals = sys.fileSeals(fd);
  if (seals === undefined || (seals & sys.IMMUTABLE_SEALS) !== sys.IMMUTABLE_SEALS) {
    throw new InvalidRequestError(
      'the manifest must be passed as a sealed memfd (memfd_create with MFD_ALLOW_SEALING, then F_ADD_SEALS with F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK), which can neither stall the broker nor change while it is read',
    );
  }
  // A sealed memfd is shmem: fstat asks no filesystem server.
  const size = fstatSync(fd).size;
  if (size > maxBytes) throw new LimitExceededError(`the manifest is ${size} bytes; the policy allows at most ${maxBytes}`);
  return size;
}

export class ImageService {
  readonly store: ObjectStore;
  readonly registry: ImageRegistry;
  /** At most two builds at once, over all users, handed out round-robin between them, each in a build helper. */
  private readonly builds = new FairQueue(2);
  private readonly builder = new BuildHelpers();
  private readonly helpers: UploadHelpers;
  /** What ProveObjects holds for each user until an AddImage adopts it. */
  readonly held: HeldObjects;
  /** What builds of manifests found, while their images are stored. */
  private readonly memo = new BuildMemo();
  /** Users with a ProveObjects under way (one at a time each). */
  private readonly proving = new Set<number>();
  /** Images whose last owner dropped them, their rows still to delete (dropRows). */
  private readonly dropping = new Set<string>();
  private dropTimer: NodeJS.Immediate | undefined;
  /** Object files deleted (and failures) since the last onDeleted report. */
  private deletions = { deleted: 0, failed: [] as string[] };
  /** Big images and uploads leave garbage an idle front would keep: collected once quiet. */
  private readonly memory = new MemoryReturn(() => this.registry.db.shrinkMemory());

  constructor(private readonly deps: ImageDeps) {
    // The registry is made next; the store asks it only once deletions run.
    // A file a hold pins stays, whatever the rows say (held.ts).
    this.store = new ObjectStore(deps.policy().images?.store ?? join(deps.stateDir, 'store'), (digest) => this.registry.db.isPresent(digest) || this.held.pinned(digest), (r) => {
      this.deletions.deleted += r.deleted;
      this.deletions.failed.push(...r.failed);
      this.settle();
    });
    this.helpers = new UploadHelpers([this.store.tmpDir, String(streamIdleMs), ...(deps.features.fsVerity ? ['--verity'] : [])]);
    // The last pin of an object no image needs any more lets its file go.
    this.held = new HeldObjects((digest) => {
      if (!this.registry.db.isPresent(digest)) this.store.discard([digest]);
    });
    this.registry = new ImageRegistry(deps.stateDir, () => this.store.list());
    this.reconcile();
  }

  /**
   * Brings the database and the files in line after a crash (see
   * StoreDb.reconcile): removes object files (off the event loop, queued:
   * a crash in the middle of a big removal leaves many) and image
   * directories nothing records, and forgets what the files no longer hold.
   */
  reconcile(): { strayFiles: number; strayImages: number; changed: number } {
    const { strayFiles, strayImages, changed } = this.registry.db.reconcile(new Set(this.store.list()), this.registry.imageDirs());
    this.store.discard(strayFiles);
    for (const id of strayImages) this.registry.removeImageDir(id);
    return { strayFiles: strayFiles.length, strayImages: strayImages.length, changed };
  }

  private sharedIds(): string[] {
    return this.deps.policy().images?.shared ?? [];
  }

  /**
   * The objects uid must still upload for an image it owns. O(1) when it has
   * proven all of them (the count is kept as objects arrive); listed from the
   * database otherwise.
   */
  missingFor(uid: number, owned: OwnedImage): string[] {
    if (owned.missing === 0) return [];
    return this.registry.db.missingFor(owned.id, uid, this.sharedIds());
  }

  /**
   * missingFor as AddImage's reply carries it (32 raw bytes a digest,
   * sorted), read and converted pageRows rows per turn (100k missing
   * digests in one turn held every other call for 0.1-0.3 s, and their
   * conversion 20-45 ms more). The pages are read at different moments: an
   * object proven meanwhile may still be listed, which costs its upload a
   * skip, never a wrong proof.
   */
  private async missingInTurns(uid: number, imageId: string): Promise<Buffer> {
    const pages: Buffer[] = [];
    for (let after: string | undefined = ''; after !== undefined; ) {
      const owned = this.registry.ownedBy(imageId, uid);
      if (!owned) throw new Error(`image ${imageId} was removed while it was being added`);
      if (owned.missing === 0) return Buffer.alloc(0);
      const { digests, next } = this.registry.db.missingPage(imageId, uid, this.sharedIds(), after, pageRows);
      const raw = Buffer.allocUnsafe(digests.length * 32);
      digests.forEach((d, k) => raw.write(d, k * 32, 32, 'hex'));
      pages.push(raw);
      after = next;
      if (after !== undefined) await new Promise((resolve) => setImmediate(resolve));
    }
    return Buffer.concat(pages);
  }

  /** What `uid` keeps in the store now (content and image metadata), not counting `except`. */
  storeUsage(uid: number, except?: string): StoreUsage {
    return this.registry.db.usage(uid, except);
  }

  /**
   * Builds the image of the manifest in the sealed memfd `fd`, in a build
   * helper, when it is `uid`'s turn; or, for a manifest built before whose
   * image is stored, takes what that build found (build-memo.ts). The check
   * that the image is stored is in the turn the registration follows in.
   */
  async build(uid: number, fd: number): Promise<Built> {
    const policy = imageLimits(this.deps.policy());
    const limits = { maxEntries: policy.maxEntriesPerImage, maxBytes: policy.maxManifestBytes };
    const key = await BuildMemo.key(fd, fstatSync(fd).size, limits);
    const hit = this.memo.get(key);
    if (hit && this.registry.stored(hit.imageId)) return hit;
    if (hit) this.memo.forget(key);
    const built = await this.builds.run(uid, () => this.builder.build(fd, limits));
    this.memo.remember(key, built);
    return built;
  }

  /** How uid holds the image another is to be kept for. */
  keptFor(uid: number, id: string): KeptFor {
    const owned = this.registry.ownedBy(id, uid);
    return { id, holding: owned === undefined ? 'none' : owned.listed ? 'listed' : 'hidden' };
  }

  imageFacts(built: Built): ImageFacts {
    return { ...built.facts, metadataBytes: imageBytesOf(built) };
  }

  /**
   * Registers a built image for uid. The registration itself (the image's
   * row and uid's) is one synchronous transaction, so it lands in the same
   * turn as the decision; its object rows follow a bounded number per turn
   * and `durable` resolves, with what uid must still upload (raw 32-byte
   * digests, as the reply carries them), once they and the image file are
   * on disk (the reply waits for it).
   */
  register(uid: number, built: Built): { imageId: string; owned: OwnedImage; durable: Promise<Buffer> } {
    // A remembered build has no image bytes: its image is on disk (build() saw it stored, in this turn).
    if (!('image' in built) && !this.registry.stored(built.imageId)) throw new InternalError(`image ${built.imageId} was removed while it was being added; add it again`);
    const { owned, durable } = this.registry.register(
      // Its objects stay packed: the registry decodes each turn's rows as it adds them.
      { id: built.imageId, ...(built.name ? { name: built.name } : {}), ...(built.keptFor ? { keptFor: built.keptFor } : {}), entries: built.facts.entries, objects: built.objects, bytes: built.facts.bytes, imageBytes: imageBytesOf(built) },
      'image' in built ? built.image : new Uint8Array(0),
      uid,
      registerRowsPerTurn,
    );
    // The image's bytes (tens of MiB for a big one) are garbage once on disk.
    void durable.finally(() => this.memory.soon()).catch(() => undefined);
    const missing = durable.then(async () => {
      await this.adopt(uid);
      const list = await this.missingInTurns(uid, built.imageId);
      // Its PutObjects follows the answer: the helper that will read it starts now.
      if (list.length > 0) this.helpers.prepare();
      return list;
    });
    return { imageId: built.imageId, owned, durable: missing };
  }

  /**
   * Turns what uid holds (ProveObjects) and its images need into proofs, as
   * PutObjects would: every hold pins a file in the store (the store's own,
   * or the copy ProveObjects published), so each is proven where that file
   * is there, and let go. A slice per turn, one transaction each. Holds no
   * image of uid needs stay until they expire. Resolves once the files this
   * made present are on disk.
   */
  private async adopt(uid: number): Promise<void> {
    // In digest order: neighbouring digests share the database's pages (in the order of the files, each
    // transaction of a slice dirtied a page per object, 45 MB of log for a 5k-object import).
    const holds = this.held.of(uid).sort((a, b) => (a[0] < b[0] ? -1 : 1));
    if (holds.length === 0) return;
    const db = this.registry.db;
    let published = 0;
    /** The slice's proofs in one transaction. */
    const prove = (slice: [string, number][]) =>
      db.transaction(() => {
        for (const [digest, size] of slice) {
          if (!this.held.get(uid, digest) || db.wantedSize(uid, digest) !== size) continue;
          if (db.hasProven(uid, digest)) {
            // Nothing to prove.
          } else if (db.isPresent(digest)) {
            db.recordPossession(uid, digest);
          } else if (!this.store.unlinking(digest) && this.store.has(digest)) {
            // The file a ProveObjects published (or one a pin kept when its last image went): present from now on,
            // and its name not synced yet.
            db.recordPossession(uid, digest);
            published++;
          }
          // Proven, or gone (AddImage lists it): the hold has done its work.
          this.held.release(uid, digest);
        }
      });
    await inTurns(holds, adoptPerTurn, prove);
    if (published === 0) return;
    // The names (and the held copies' contents) are on disk before the answer says the objects are there.
    const fd = openSync(this.store.objectsDir, 'r');
    try {
      await sys.syncfsAsync(fd);
    } finally {
      closeSync(fd);
    }
  }

  /**
   * Receives PutObjects records from `streamFd` (which it owns from the call
   * on) in an upload helper. Each object is hashed there; the front publishes
   * it only while an image of uid still needs it and the store lacks it, and
   * records uid's proof, a batch per transaction. Resolves once every
   * published name is on disk.
   */
  async receive(uid: number, streamFd: number, socket: boolean): Promise<{ objects: number; bytes: number }> {
    let objects = 0;
    let bytes = 0;
    // Objects whose old file's unlink was under way when their batch came: published once it is done, before the sync.
    let deferred: Promise<void> = Promise.resolve();
    const credit = (batch: [string, number, string | null][], call: DriveCall) => {
      const done = this.publish(uid, batch);
      objects += done.objects;
      bytes += done.bytes;
      if (done.waiting.length === 0) return;
      deferred = deferred
        .then(async () => {
          await Promise.all(done.waiting.map((w) => this.store.unlinking(w[0])));
          if (!call.settled()) credit(done.waiting, call);
        })
        .catch((err: Error) => call.fail(err));
    };
    await this.drive(uid, streamFd, socket, () => this.pendingLine(uid), {
      // Each batch published a slice per turn (a batch of 1024 in one turn held every other call for 0.2-0.3 s).
      batch: (items, call) => inTurns(items as [string, number, string | null][], publishPerTurn, (slice) => !call.settled() && credit(slice, call)),
      // Every publish is done (the deferred ones too) before the helper makes the names durable.
      end: () => deferred.then(() => 'sync' as const),
    });
    return { objects, bytes };
  }

  /**
   * ProveObjects: hashes the files (or bytes) of `streamFd`'s records in an
   * upload helper and holds each object for uid (held.ts) until an AddImage
   * adopts it: a pin on the store's file of it, the helper's copy published
   * there first when the store lacks it. Answers the digests in record order
   * (32 raw bytes each), once the copies have their names. Limits are
   * the caller's: bytes within what its quota leaves, objects within the
   * policy's entries per image, less what it holds already; one call of a
   * user's at a time. A call that fails holds nothing new.
   */
  async prove(uid: number, streamFd: number, socket: boolean): Promise<{ digests: Buffer; objects: number; bytes: number }> {
    if (this.proving.has(uid)) {
      closeSync(streamFd);
      throw new LimitExceededError('a ProveObjects of yours is under way; one at a time (send more records in it, or wait for its answer)');
    }
    const limits = imageLimits(this.deps.policy());
    const held = this.held.usage(uid);
    const allowance = { bytes: Math.max(0, limits.maxBytesPerUser - this.storeUsage(uid).bytes - held.bytes), records: Math.max(0, limits.maxEntriesPerImage - held.objects) };
    const digests: Buffer[] = [];
    const fresh: string[] = [];
    let objects = 0;
    let bytes = 0;
    this.proving.add(uid);
    try {
      await this.drive(uid, streamFd, socket, async () => `${JSON.stringify({ prove: allowance })}\n`, {
        batch: async (items, call) => {
          const copies: [string, string][] = [];
          await inTurns(items as [string, number, string | null, number][], publishPerTurn, (slice) => {
            if (call.settled()) return;
            for (const [digest, size, tmp, index] of slice) {
              digests[index] = Buffer.from(digest, 'hex');
              objects++;
              bytes += size;
              const inStore = (this.registry.db.isPresent(digest) || this.held.pinned(digest)) && !this.store.unlinking(digest);
              // Gone from the store since the helper looked (its last image removed just then), and no copy: not held, so AddImage will list it and the client send it.
              if (tmp === null && !inStore) continue;
              // Pinned before its copy is published: a deletion of the digest's file queued meanwhile leaves the new one.
              if (this.held.add(uid, digest, size)) fresh.push(digest);
              if (tmp !== null && !inStore && !this.store.unlinking(digest)) copies.push([tmp, digest]);
            }
          });
          // The copies get their objects' names now, while the helper hashes on (at AddImage they would be
          // renames one after the other: 4.5 s of a 45k-object AddImage); a copy not needed stays in tmp/ and
          // goes with the call's tmp files.
          for (let k = 0; k < copies.length; k += renamesAtOnce) {
            await Promise.all(copies.slice(k, k + renamesAtOnce).map(([tmp, digest]) => this.store.publishAsync(tmp, digest).catch(() => this.held.release(uid, digest))));
          }
        },
        // Nothing to sync: what an AddImage adopts is made durable then. That AddImage comes next: its
        // build helper starts now, while the client makes its manifest (a start is 0.1-0.2 s here).
        end: async () => {
          this.builder.warm();
          return 'done' as const;
        },
      });
    } catch (err) {
      // The pins are let go: a published copy no image needs is deleted then (onUnpinned); the rest went with the tmp files.
      for (const d of fresh) this.held.release(uid, d);
      throw err;
    } finally {
      this.proving.delete(uid);
    }
    if (digests.length !== objects) throw new Error(`the upload helper answered ${objects} of ${digests.length} record(s)`);
    return { digests: Buffer.concat(digests), objects, bytes };
  }

  /**
   * Runs one upload helper over `streamFd` (owned from the call on): hands it
   * the stream and its first line, passes each batch it reports to
   * `handlers.batch` (in order), and once it reached the end and the batches
   * are done, either has it sync (PutObjects: the published names made
   * durable) or ends. The helper is killed at the deadline when it goes quiet,
   * and what it left in tmp/ under its prefix is removed in every case.
   */
  private async drive(
    uid: number,
    streamFd: number,
    socket: boolean,
    firstLine: () => Promise<string>,
    handlers: { batch(items: unknown[][], call: DriveCall): Promise<void>; end(): Promise<'sync' | 'done'> },
  ): Promise<void> {
    let first: string;
    try {
      first = await firstLine();
    } catch (err) {
      closeSync(streamFd);
      throw err;
    }
    const prefix = `${uid}-${randomBytes(6).toString('hex')}`;
    let helper;
    try {
      helper = this.helpers.take();
    } catch (err) {
      closeSync(streamFd);
      throw err;
    }
    const child = helper.child;
    // The helper gets its own copy through the channel; the front's goes once it is sent.
    const handed = helper.start(streamFd, { prefix, socket }).finally(() => closeSync(streamFd));
    const stdin = child.stdin!;
    stdin.write(first);
    let objects = 0;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      let lastLine = 0;
      let timer: NodeJS.Timeout | undefined;
      // The batches, in order.
      let publishing: Promise<void> = Promise.resolve();
      const finish = (err?: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        child.kill('SIGKILL');
        // Once it is gone: a hashing thread of a helper still dying could create a file after the listing.
        const gone = child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => child.once('exit', () => r()));
        const dropped = gone.then(() => this.store.dropTmp(prefix)).catch(() => undefined);
        this.memory.soon();
        void dropped.then(() => (err ? reject(err) : resolve()));
      };
      const call: DriveCall = { settled: () => settled, fail: (err) => finish(err) };
      // The helper says it is alive several times a second unless a read is stuck (a file on a filesystem that does not answer).
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          // Lines that arrived while this loop was busy are read first (the poll phase comes before setImmediate).
          const last = lastLine;
          setImmediate(() => {
            if (lastLine !== last) return;
            finish(new TimeoutError(`reading the upload did not progress for ${this.deps.fdDeadlineMs / 1000} s (a passed file's filesystem, e.g. a FUSE server, is not responding); ${objects} object(s) were taken before it`));
          });
        }, Math.max(this.deps.fdDeadlineMs, 1000));
      };
      arm();
      handed.catch((err: Error) => finish(new Error(`the upload helper did not get the stream: ${err.message}`)));
      createInterface({ input: child.stdout! }).on('line', (text) => {
        if (settled) return;
        let line: Record<string, unknown>;
        try {
          line = JSON.parse(text) as Record<string, unknown>;
        } catch {
          return finish(new Error('the upload helper said something unreadable'));
        }
        lastLine++;
        arm();
        if (Array.isArray(line.b)) {
          const batch = line.b as unknown[][];
          objects += batch.length;
          publishing = publishing.then(() => handlers.batch(batch, call)).catch((err: Error) => finish(err));
        } else if (line.end) {
          void publishing
            .then(() => handlers.end())
            .then((next) => {
              if (settled) return;
              if (next === 'sync') stdin.write('sync\n');
              else finish();
            })
            .catch((err: Error) => finish(err));
        } else if (line.synced) {
          finish();
        } else if (typeof line.e === 'string') {
          finish(line.limit === true ? new LimitExceededError(line.e) : new InvalidRequestError(line.e));
        }
      });
      child.once('exit', (code, signal) => finish(new Error(`the upload helper exited (${signal ?? code}) before the upload was complete`)));
      child.once('error', (err) => finish(new Error(`the upload helper could not start: ${err.message}`)));
    });
  }

  /**
   * The objects uid may upload now (StoreDb.pendingFor: digest, size,
   * whether the store holds it) as the upload helper's first line, read
   * pageRows rows per turn (100k in one turn held every other call
   * for 0.3 s and more). The pages are read at different moments: harmless,
   * as every object is checked again when it is published.
   */
  private async pendingLine(uid: number): Promise<string> {
    const limit = pageRows;
    const seen = new Set<string>();
    const pieces: string[] = [];
    for (const id of this.registry.db.pendingImages(uid)) {
      for (let after: string | undefined = ''; after !== undefined; ) {
        const rows = this.registry.db.pendingPage(id, uid, after, limit);
        const fresh = rows.filter((r) => !seen.has(r.digest));
        for (const r of fresh) seen.add(r.digest);
        if (fresh.length > 0) pieces.push(JSON.stringify(fresh.map((r) => [r.digest, r.size, r.present === 1])).slice(1, -1));
        after = rows.length === limit ? rows.at(-1)!.digest : undefined;
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    return `{"pending":[${pieces.join(',')}]}\n`;
  }

  /**
   * Publishes (part of) a synced batch for uid in one turn: each object is named only
   * while one of uid's images still needs it and the store lacks it, and the
   * proofs are one transaction. Returns what uid was credited with, and the
   * objects to publish again once the unlink under way of their digest's old
   * file (an image removed just before) is done: renamed now, the new file
   * could be the one that unlink deletes.
   */
  private publish(uid: number, batch: [digest: string, size: number, tmp: string | null][]): { objects: number; bytes: number; waiting: [string, number, string | null][] } {
    const db = this.registry.db;
    let objects = 0;
    let bytes = 0;
    const waiting: [string, number, string | null][] = [];
    db.transaction(() => {
      for (const item of batch) {
        const [digest, size, tmp] = item;
        if (db.wantedSize(uid, digest) !== size) continue;
        if (!db.isPresent(digest)) {
          // Not written because the store had it when the upload began, and gone since: uid has to send it again.
          if (!tmp) continue;
          if (this.store.unlinking(digest)) {
            waiting.push(item);
            continue;
          }
          this.store.publish(tmp, digest);
        }
        db.recordPossession(uid, digest);
        objects++;
        bytes += size;
      }
    });
    return { objects, bytes, waiting };
  }

  /** uid's image `imageId` and what it still lacks; undefined when uid has no such image. O(1) once uid has every object. */
  mountFacts(uid: number, imageId: string): { owned: OwnedImage; missing: string[]; missingCount: number } | undefined {
    const owned = digestPattern.test(imageId) && this.registry.stored(imageId) ? this.registry.ownedBy(imageId, uid) : undefined;
    if (!owned) return undefined;
    // The refusal names a few: listing every missing digest of a big image at each call would be per-object work on the front, repeatable at will.
    if (owned.missing > 0 && this.sharedIds().length === 0) return { owned, missing: this.registry.db.someMissingFor(imageId, uid, 5), missingCount: owned.missing };
    const missing = this.missingFor(uid, owned);
    return { owned, missing, missingCount: missing.length };
  }

  planMount(grant: MountGrant, imageId: string): Plan {
    return planComposefsMount(grant, this.registry.imagePath(imageId), this.store.objectsDir, {
      verity: this.deps.features.fsVerity,
      fileBackedErofs: this.deps.features.fileBackedErofs,
    });
  }

  /** uid's listed images that are whole (one being added shows once it is stored). */
  list(uid: number): Record<string, unknown>[] {
    return this.registry.listFor(uid).filter((m) => this.registry.stored(m.id)).map((m) => ({
      id: m.id,
      // name: the one given last, all a client from before several names reads.
      ...(m.name ? { name: m.name } : {}),
      names: m.names,
      entries: m.entries,
      objects: m.objects,
      // The kept count, unless shared images waive some proofs: listing them all would be per-object work for a count.
      missing: this.sharedIds().length === 0 ? m.missing : this.missingFor(uid, m).length,
      bytes: m.bytes + m.imageBytes,
      added: m.added,
    }));
  }

  /** Drops uid's name; with its last name, uid's registration of the image goes as by remove. Undefined when uid has no such name. */
  removeName(uid: number, name: string): { id: string; unregistered: boolean } | undefined {
    const r = this.registry.removeName(uid, name);
    if (!r) return undefined;
    for (const id of r.gone) this.dropping.add(id);
    if (r.gone.length > 0) this.dropRows();
    return { id: r.id, unregistered: r.unregistered };
  }

  /**
   * Drops uid's registration of imageId (which it must own) at once, and with
   * it uid's quota; an image no one owns any more then loses its rows a
   * bounded number per turn of the event loop (dropRows), and the objects no
   * image references their files, off the event loop (ObjectStore.discard).
   */
  remove(uid: number, imageId: string): void {
    const gone = this.registry.unregister(imageId, uid);
    for (const id of gone) this.dropping.add(id);
    if (gone.length > 0) this.dropRows();
  }

  /** Once no row and no file of a removed image is left to delete: said (onDeleted), once for everything since the last time. */
  private settle(): void {
    if (this.dropping.size > 0 || this.dropTimer || !this.store.idle()) return;
    const report = this.deletions;
    this.deletions = { deleted: 0, failed: [] };
    // What the deletions held (digest lists, pending unlinks) is garbage now: returned like a big call's.
    this.memory.soon();
    this.deps.onDeleted?.(report);
  }

  /**
   * Deletes the rows of images without owners, rowsPerTurn object rows per
   * transaction, one transaction per turn of the event loop (calls are
   * answered in between), and queues the files of the objects they freed.
   */
  private dropRows(): void {
    if (this.dropTimer) return;
    const step = () => {
      this.dropTimer = undefined;
      const [id] = this.dropping;
      if (id === undefined) {
        this.memory.soon();
        this.settle();
        return;
      }
      const { done, dropped } = this.registry.db.dropSome(id, rowsPerTurn);
      if (done) this.dropping.delete(id);
      this.store.discard(dropped);
      this.dropTimer = setImmediate(step);
    };
    this.dropTimer = setImmediate(step);
  }
}
