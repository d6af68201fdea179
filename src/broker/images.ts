// The image side of the broker: builds (in workers, queued fairly between
// users), the registry, the object store and its accounting. It decides
// nothing: the method records (methods.ts) ask src/policy/images.ts, and the
// pipeline audits. Quotas are computed from the registry at the moment of
// each decision, and the decision and the registration happen in one turn of
// the event loop, so concurrent calls cannot both pass a check that only one
// of them fits. An object is published only while an image still needs it,
// and objects no image needs are collected.
import { fstatSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidRequestError, LimitExceededError, MountgateError } from '../errors.js';
import { missingObjects, type ImageFacts, type MountGrant, type StoreUsage } from '../policy/images.js';
import { planComposefsMount, type Plan } from '../policy/plan.js';
import type { Policy } from '../schema/types.generated.js';
import type { KernelFeatures } from '../sys/features.js';
import * as sys from '../sys/syscalls.js';
import { ImageRegistry, type ImageMeta } from '../store/images.js';
import { DigestMismatchError, digestPattern, ObjectStore } from '../store/objects.js';
import { defaultImageLimits } from '../policy/default.js';
import { FairQueue, fairChunks } from './fair-queue.js';
import { ImageBuilder, type BuiltImage } from './image-builder.js';
import type { StreamReader } from './stream.js';

export interface ImageDeps {
  stateDir: string;
  policy: () => Policy;
  features: KernelFeatures;
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
  /** At most two builds at once, over all users, handed out round-robin between them, on two workers. */
  private readonly builds = new FairQueue(2);
  private readonly builder = new ImageBuilder(this.builds.slots);
  /** Uploaded chunks are hashed and written one at a time, round-robin between users (no turn is held while a stream is silent). */
  private readonly uploads = new FairQueue(1);

  constructor(private readonly deps: ImageDeps) {
    this.store = new ObjectStore(deps.policy().images?.store ?? join(deps.stateDir, 'store'), deps.features.fsVerity);
    this.registry = new ImageRegistry(deps.stateDir);
    this.collect();
  }

  /** Resolves once the build workers run. */
  get ready(): Promise<void> {
    return this.builder.ready;
  }

  /** Removes every stored object no registered image references (left by a crash or an interrupted removal). */
  collect(): number {
    const referenced = this.referenced();
    let removed = 0;
    for (const d of [...this.store.list()]) {
      if (referenced.has(d)) continue;
      this.store.remove(d);
      removed++;
    }
    return removed;
  }

  private referenced(): Set<string> {
    const out = new Set<string>();
    for (const m of this.registry.all()) for (const d of Object.keys(m.objects)) out.add(d);
    return out;
  }

  private sharedDigests(): Set<string> {
    const out = new Set<string>();
    for (const id of this.deps.policy().images?.shared ?? []) for (const d of Object.keys(this.registry.get(id)?.objects ?? {})) out.add(d);
    return out;
  }

  missingFor(uid: number, meta: ImageMeta, shared = this.sharedDigests()): string[] {
    return missingObjects(Object.keys(meta.objects), {
      inStore: (d) => this.store.has(d),
      proven: (d) => this.registry.hasProven(uid, d),
      shared: (d) => shared.has(d),
    });
  }

  /** What `uid` keeps in the store now (content and image metadata), not counting `except`. */
  storeUsage(uid: number, except?: string): StoreUsage {
    const mine = this.registry.listFor(uid).filter((m) => m.id !== except);
    return { images: mine.length, bytes: mine.reduce((n, m) => n + m.bytes + m.imageBytes, 0) };
  }

  /** Builds the image of the manifest in the sealed memfd `fd`, in a worker, when it is `uid`'s turn. */
  build(uid: number, fd: number): Promise<BuiltImage> {
    const limits = imageLimits(this.deps.policy());
    return this.builds.run(uid, () => this.builder.build(fd, { maxEntries: limits.maxEntriesPerImage, maxBytes: limits.maxManifestBytes }));
  }

  imageFacts(built: BuiltImage): ImageFacts {
    return { ...built.facts, metadataBytes: built.image.length };
  }

  /**
   * Registers a built image for uid. The registration itself is synchronous,
   * so it lands in the same turn as the decision; `durable` resolves once it
   * is on disk (the reply waits for it).
   */
  register(uid: number, built: BuiltImage): { imageId: string; missing: string[]; meta: ImageMeta; durable: Promise<void> } {
    const { meta, durable } = this.registry.register(
      { id: built.imageId, ...(built.name ? { name: built.name } : {}), entries: built.facts.entries, objects: built.objects, bytes: built.facts.bytes, imageBytes: built.image.length },
      built.image,
      uid,
    );
    return { imageId: built.imageId, missing: this.missingFor(uid, meta), meta, durable };
  }

  /** Objects uid may upload now, digest -> size. */
  pendingFor(uid: number): Map<string, number> {
    const out = new Map<string, number>();
    const shared = this.sharedDigests();
    for (const meta of this.registry.listFor(uid)) for (const d of this.missingFor(uid, meta, shared)) out.set(d, meta.objects[d]!);
    return out;
  }

  /** Does one of uid's images still need this object from uid? (Asked again just before each object is published.) */
  private stillWanted(uid: number, digest: string): boolean {
    return this.registry.listFor(uid).some((m) => digest in m.objects);
  }

  /** Receives PutObjects records from `reader`; each object is hashed, and published only while an image of uid needs it. */
  async receive(uid: number, reader: StreamReader): Promise<{ objects: number; bytes: number }> {
    const pending = this.pendingFor(uid);
    let objects = 0;
    let bytes = 0;
    let proofs: Promise<void> = Promise.resolve();
    try {
      for (;;) {
        const header = await reader.readExact(40);
        if (!header) break;
        const digest = header.subarray(0, 32).toString('hex');
        const size = Number(header.readBigUInt64LE(32));
        const expected = pending.get(digest);
        if (expected === undefined) throw new InvalidRequestError(`object ${digest} is not missing from any of your images; add the image first (AddImage)`);
        if (size !== expected) throw new InvalidRequestError(`object ${digest} is ${expected} bytes in your image, but the stream says ${size}`);
        try {
          await this.store.ingest(digest, size, fairChunks(this.uploads, uid, reader.chunks(size)), () => this.stillWanted(uid, digest));
        } catch (err) {
          if (err instanceof DigestMismatchError) throw new InvalidRequestError(`${err.message}; nothing of it was stored`);
          throw err;
        }
        if (this.stillWanted(uid, digest)) proofs = this.registry.recordProof(uid, [digest]);
        pending.delete(digest);
        objects += 1;
        bytes += size;
      }
    } catch (err) {
      if (err instanceof MountgateError) throw err;
      throw new InvalidRequestError(`the object stream failed after ${objects} object(s): ${(err as Error).message}`);
    }
    // The answer says the objects are yours: once that is on disk (the last write carries every proof before it).
    await proofs;
    return { objects, bytes };
  }

  /** uid's image `imageId` and what it still lacks; undefined when uid has no such image. */
  mountFacts(uid: number, imageId: string): { meta: ImageMeta; missing: string[] } | undefined {
    const meta = digestPattern.test(imageId) && this.registry.stored(imageId) ? this.registry.ownedBy(imageId, uid) : undefined;
    return meta ? { meta, missing: this.missingFor(uid, meta) } : undefined;
  }

  planMount(grant: MountGrant, imageId: string): Plan {
    return planComposefsMount(grant, this.registry.imagePath(imageId), this.store.objectsDir, {
      verity: this.deps.features.fsVerity,
      fileBackedErofs: this.deps.features.fileBackedErofs,
    });
  }

  list(uid: number): Record<string, unknown>[] {
    const shared = this.sharedDigests();
    return this.registry.listFor(uid).map((m) => ({
      id: m.id,
      ...(m.name ? { name: m.name } : {}),
      entries: m.entries,
      objects: Object.keys(m.objects).length,
      missing: this.missingFor(uid, m, shared).length,
      bytes: m.bytes + m.imageBytes,
      added: m.owners[String(uid)],
    }));
  }

  /** Drops uid's registration of imageId (which it must own), then every object no image references. */
  remove(uid: number, imageId: string): void {
    const meta = this.registry.ownedBy(imageId, uid)!;
    if (!this.registry.unregister(imageId, uid)) return;
    const referenced = this.referenced();
    const dropped = new Set(Object.keys(meta.objects).filter((d) => !referenced.has(d)));
    for (const d of dropped) this.store.remove(d);
    this.registry.forgetProofs(dropped);
  }
}
