// The broker's image methods: AddImage, PutObjects, MountImage, ListImages,
// RemoveImage. Facts come from the manifest (validated here again), the
// store and the registry; decisions from src/policy/images.ts; mounts from
// the executor. The broker writes every image itself: the kernel never
// parses filesystem bytes a user wrote.
import { fstatSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidRequestError, MountgateError, NotFoundError } from '../errors.js';
import { MAX_MANIFEST_BYTES } from '../manifest/limits.js';
import type { CallerIdentity, UsageFacts, Verdict } from '../policy/decide.js';
import { decideMethod, type RuledMethod } from '../policy/decide.js';
import { decideAddImage, decideMountImage, missingObjects, type MountGrant } from '../policy/images.js';
import { planComposefsMount, type Plan } from '../policy/plan.js';
import type { MountRequest, Policy } from '../schema/types.generated.js';
import { formatIssues, parseAndValidate } from '../schema/validate.js';
import { fsTypeName } from '../sys/fsmagic.js';
import type { KernelFeatures } from '../sys/features.js';
import * as sys from '../sys/syscalls.js';
import type { UserNamespaceCache } from '../sys/userns.js';
import { ImageRegistry, type ImageMeta } from '../store/images.js';
import { DigestMismatchError, digestPattern, ObjectStore } from '../store/objects.js';
import { executePlan } from './execute.js';
import { defaultImageLimits } from '../policy/default.js';
import { ImageBuilder } from './image-builder.js';
import { StreamReader } from './stream.js';

export interface ImageDeps {
  stateDir: string;
  policy: () => Policy;
  userns: UserNamespaceCache;
  features: KernelFeatures;
}

/** Audits a verdict, with extra fields, for the call at hand. */
export type AuditVerdict = (verdict: Verdict, extra?: Record<string, unknown>) => void;

/** Refuses unless the policy lets this caller use the method at all (and, given its usage, now). */
function gate(method: RuledMethod, caller: CallerIdentity, policy: Policy, audit: AuditVerdict, usage?: UsageFacts): Verdict {
  const verdict = decideMethod(method, caller, policy, usage);
  if (verdict.allowed) return verdict;
  audit(verdict);
  refuse(verdict);
}

const idleMs = 60_000;

function refuse(verdict: Verdict): never {
  throw new MountgateError(verdict.error!.reason, verdict.error!.message);
}

/** The manifest from an fd of a regular file or memfd, read by position (never blocks on a pipe). */
function readManifestFd(fd: number): Buffer {
  const st = fstatSync(fd);
  if (!st.isFile()) throw new InvalidRequestError('the manifest must be passed as an fd of a regular file or memfd, not a pipe or socket');
  const fsType = fsTypeName(sys.fsMagic(fd));
  if (fsType === 'fuse') throw new InvalidRequestError('the manifest fd is on a FUSE filesystem, whose reads could block the broker; copy it to a memfd or tmpfs first');
  if (st.size > MAX_MANIFEST_BYTES) throw new InvalidRequestError(`the manifest is ${st.size} bytes, at most ${MAX_MANIFEST_BYTES}`);
  const buf = Buffer.alloc(st.size);
  let at = 0;
  while (at < buf.length) {
    const n = readSync(fd, buf, at, buf.length - at, at);
    if (n === 0) break;
    at += n;
  }
  return buf.subarray(0, at);
}

export class ImageService {
  readonly store: ObjectStore;
  readonly registry: ImageRegistry;
  private readonly builder = new ImageBuilder();

  constructor(private readonly deps: ImageDeps) {
    this.store = new ObjectStore(deps.policy().images?.store ?? join(deps.stateDir, 'store'), deps.features.fsVerity);
    this.registry = new ImageRegistry(deps.stateDir);
  }

  private sharedDigests(): Set<string> {
    const out = new Set<string>();
    for (const id of this.deps.policy().images?.shared ?? []) for (const d of Object.keys(this.registry.get(id)?.objects ?? {})) out.add(d);
    return out;
  }

  missingFor(uid: number, meta: ImageMeta): string[] {
    const shared = this.sharedDigests();
    return missingObjects(Object.keys(meta.objects), {
      inStore: (d) => this.store.has(d),
      proven: (d) => this.registry.hasProven(uid, d),
      shared: (d) => shared.has(d),
    });
  }

  private storeUsage(uid: number, except?: string) {
    const mine = this.registry.listFor(uid).filter((m) => m.id !== except);
    return { images: mine.length, bytes: mine.reduce((n, m) => n + m.bytes, 0) };
  }

  async addImage(caller: CallerIdentity, usage: UsageFacts, fd: number, audit: AuditVerdict): Promise<{ imageId: string; missing: string[] }> {
    gate('AddImage', caller, this.deps.policy(), audit);
    // Parsing, checking and writing a big image takes seconds: a worker
    // thread does it, so the broker keeps answering everyone meanwhile.
    const limits = { ...defaultImageLimits, ...this.deps.policy().images };
    const built = await this.builder.build(readManifestFd(fd), { maxEntries: limits.maxEntriesPerImage });
    const { imageId, image, facts, objects, name } = built;
    const verdict = decideAddImage({
      caller,
      policy: this.deps.policy(),
      usage,
      image: facts,
      store: this.storeUsage(caller.uid, imageId),
      alreadyRegistered: this.registry.ownedBy(imageId, caller.uid) !== undefined,
    });
    if (!verdict.allowed) {
      audit(verdict);
      refuse(verdict);
    }
    const meta = this.registry.register({ id: imageId, ...(name ? { name } : {}), entries: facts.entries, objects, bytes: facts.bytes }, image, caller.uid);
    const missing = this.missingFor(caller.uid, meta);
    audit(verdict, { image: imageId, entries: meta.entries, missing: missing.length });
    return { imageId, missing };
  }

  /** Objects this caller may upload now, digest -> size. */
  private pendingFor(uid: number): Map<string, number> {
    const out = new Map<string, number>();
    for (const meta of this.registry.listFor(uid)) for (const d of this.missingFor(uid, meta)) out.set(d, meta.objects[d]!);
    return out;
  }

  async putObjects(caller: CallerIdentity, usage: UsageFacts, fd: number, takeFd: (fd: number) => void, audit: AuditVerdict): Promise<{ objects: number; bytes: number }> {
    const verdict = gate('PutObjects', caller, this.deps.policy(), audit, usage);
    const st = fstatSync(fd);
    if (!st.isFIFO() && !st.isSocket()) throw new InvalidRequestError('the object stream must be the read end of a pipe or a socket');
    takeFd(fd); // the reader's socket owns and closes it from here on
    const reader = StreamReader.fromFd(fd, idleMs);
    const pending = this.pendingFor(caller.uid);
    let objects = 0;
    let bytes = 0;
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
          await this.store.ingest(digest, size, reader.chunks(size));
        } catch (err) {
          if (err instanceof DigestMismatchError) throw new InvalidRequestError(`${err.message}; nothing of it was stored`);
          throw err;
        }
        this.registry.recordProof(caller.uid, [digest]);
        pending.delete(digest);
        objects += 1;
        bytes += size;
      }
    } catch (err) {
      audit({ ...verdict, allowed: false, error: { reason: 'InvalidRequest', message: (err as Error).message } }, { objects, bytes });
      if (err instanceof MountgateError) throw err;
      throw new InvalidRequestError(`the object stream failed after ${objects} object(s): ${(err as Error).message}`);
    } finally {
      reader.close();
    }
    audit(verdict, { objects, bytes });
    return { objects, bytes };
  }

  /** The verdict and, when allowed, the plan for mounting an image: what MountImage does and Explain prints. */
  planMount(caller: CallerIdentity, usage: UsageFacts, imageId: string, request: MountRequest): { verdict: Verdict<MountGrant>; plan?: Plan; meta?: ImageMeta } {
    const meta = digestPattern.test(imageId) ? this.registry.ownedBy(imageId, caller.uid) : undefined;
    const verdict = decideMountImage({
      caller,
      policy: this.deps.policy(),
      usage,
      imageId,
      ...(meta ? { image: { entries: meta.entries, bytes: meta.bytes, devices: [] } } : {}),
      missing: meta ? this.missingFor(caller.uid, meta) : [],
      request,
    });
    if (!verdict.allowed || !verdict.grant || !meta) return { verdict };
    const plan = planComposefsMount(verdict.grant, this.registry.imagePath(imageId), this.store.objectsDir, {
      verity: this.deps.features.fsVerity,
      fileBackedErofs: this.deps.features.fileBackedErofs,
    });
    return { verdict, plan, meta };
  }

  async mountImage(caller: CallerIdentity, usage: UsageFacts, imageId: string, requestJson: string, audit: AuditVerdict): Promise<{ mountFd: number; info: Record<string, unknown> }> {
    const parsed = parseAndValidate('mount-request', requestJson);
    if (!parsed.ok) throw new InvalidRequestError(`the mount request is invalid: ${formatIssues(parsed.issues).join('; ')}`);
    const { verdict, plan, meta } = this.planMount(caller, usage, imageId, parsed.value as MountRequest);
    if (!plan || !meta || !verdict.grant) {
      audit(verdict, { image: imageId });
      refuse(verdict);
    }
    const { mountFd } = await executePlan(plan, [], this.deps.userns);
    const info = { image: imageId, name: meta.name, uidMap: verdict.grant.uidMap, gidMap: verdict.grant.gidMap, verity: this.deps.features.fsVerity };
    audit(verdict, { mounted: info });
    return { mountFd, info };
  }

  listImages(caller: CallerIdentity, audit: AuditVerdict): string {
    gate('ListImages', caller, this.deps.policy(), audit);
    return JSON.stringify(
      this.registry.listFor(caller.uid).map((m) => ({
        id: m.id,
        ...(m.name ? { name: m.name } : {}),
        entries: m.entries,
        objects: Object.keys(m.objects).length,
        missing: this.missingFor(caller.uid, m).length,
        bytes: m.bytes,
        added: m.owners[String(caller.uid)],
      })),
    );
  }

  removeImage(caller: CallerIdentity, imageId: string, audit: AuditVerdict): void {
    gate('RemoveImage', caller, this.deps.policy(), audit);
    const meta = digestPattern.test(imageId) ? this.registry.ownedBy(imageId, caller.uid) : undefined;
    if (!meta) throw new NotFoundError(`you have no image ${imageId}; see ListImages (mountgate image ls)`);
    audit({ method: 'RemoveImage', allowed: true, checks: [{ ok: true, message: `image ${imageId} is yours` }] }, { image: imageId });
    if (!this.registry.unregister(imageId, caller.uid)) return;
    // The image is gone: drop the objects no other image references.
    const referenced = new Set<string>();
    for (const other of this.registry.all()) for (const d of Object.keys(other.objects)) referenced.add(d);
    const dropped = new Set(Object.keys(meta.objects).filter((d) => !referenced.has(d)));
    for (const d of dropped) this.store.remove(d);
    this.registry.forgetProofs(dropped);
  }
}
