// Decisions about composefs images, pure: may this caller register this
// image, which objects must it still upload, may it mount it with this map.
import type { IdRange, MountRequest, Policy } from '../schema/types.generated.js';
import { defaultImageLimits } from './default.js';
import { limitChecks, methodChecks, systemIdChecks, verdictOf, type CallerIdentity, type Check, type UsageFacts, type Verdict } from './decide.js';
import { controlledIds, covers, rootlessMap, shapeProblems } from './idmap.js';

/** What the broker learned from a validated manifest. */
export interface ImageFacts {
  entries: number;
  bytes: number;
  /** Paths of character or block devices (overlay whiteouts are not devices): at most shownDevices when deviceCount is given. */
  devices: string[];
  /** How many device nodes there are, when `devices` names only the first few. */
  deviceCount?: number;
  /** Size of the image's own metadata (the EROFS file), which counts toward the quota; known once it is built. */
  metadataBytes?: number;
}

/** The caller's current use of the store, not counting the image at hand. */
export interface StoreUsage {
  images: number;
  /** Of those, hidden images kept for others (they count like any image). */
  hidden?: number;
  bytes: number;
}

/** For an image registered hidden (the manifest's keptFor): the image it is kept for, as the caller holds it. */
export interface KeptFor {
  id: string;
  /** listed: one the caller added; hidden: itself kept for another; none: the caller has no such image. */
  holding: 'listed' | 'hidden' | 'none';
}

function keptForCheck(k: KeptFor, imageId: string | undefined): Check {
  if (k.id === imageId) return { ok: false, reason: 'InvalidRequest', message: `the image would be kept for itself (keptFor ${k.id})` };
  if (k.holding === 'none') return { ok: false, reason: 'NotFound', message: `keptFor: you have no image ${k.id} to keep this one for` };
  if (k.holding === 'hidden') return { ok: false, reason: 'InvalidRequest', message: `keptFor: image ${k.id} is itself a hidden image kept for another; keep images only for images you added` };
  return { ok: true, message: `kept hidden for your image ${k.id}: not listed, removed with it` };
}

/** Device paths a refusal names (the build says only these many, and how many there are). */
export const shownDevices = 3;

function deviceCheck(image: ImageFacts): Check {
  const count = image.deviceCount ?? image.devices.length;
  if (count === 0) return { ok: true, message: 'the image has no device nodes' };
  const shown = image.devices.slice(0, shownDevices).join(', ') + (count > shownDevices ? `, and ${count - shownDevices} more` : '');
  return {
    ok: false,
    reason: 'PolicyDenied',
    message: `the image contains device nodes (${shown}); they are refused because a user can clear nodev on a mount it attached`,
  };
}

export function decideAddImage(input: {
  caller: CallerIdentity;
  policy: Policy;
  usage: UsageFacts;
  image: ImageFacts;
  store: StoreUsage;
  alreadyRegistered: boolean;
  imageId?: string;
  keptFor?: KeptFor;
}): Verdict {
  const { caller, policy, image, store } = input;
  const checks = methodChecks('AddImage', caller, policy);
  if (checks.some((c) => !c.ok)) return verdictOf('AddImage', checks);
  checks.push(...limitChecks(policy, input.usage));
  const limits = { ...defaultImageLimits, ...policy.images };
  checks.push(
    image.entries <= limits.maxEntriesPerImage
      ? { ok: true, message: `${image.entries} entries (at most ${limits.maxEntriesPerImage})` }
      : { ok: false, reason: 'LimitExceeded', message: `the image has ${image.entries} entries; the policy allows at most ${limits.maxEntriesPerImage}` },
  );
  checks.push(deviceCheck(image));
  if (input.keptFor) checks.push(keptForCheck(input.keptFor, input.imageId));
  if (!input.alreadyRegistered) {
    const hidden = store.hidden ? ` (${store.hidden} of them hidden, kept for layers of your images)` : '';
    checks.push(
      store.images < limits.maxImagesPerUser
        ? { ok: true, message: `${store.images} of ${limits.maxImagesPerUser} images in use${hidden}` }
        : { ok: false, reason: 'LimitExceeded', message: `quota exceeded: you have ${store.images} images${hidden}, the limit is ${limits.maxImagesPerUser}; remove one first` },
    );
    const adds = image.bytes + (image.metadataBytes ?? 0);
    const what = image.metadataBytes === undefined ? `${image.bytes} bytes of content` : `${image.bytes} bytes of content and ${image.metadataBytes} bytes of metadata`;
    checks.push(
      store.bytes + adds <= limits.maxBytesPerUser
        ? { ok: true, message: `${store.bytes + adds} of ${limits.maxBytesPerUser} bytes in use with this image (${what})` }
        : { ok: false, reason: 'LimitExceeded', message: `quota exceeded: this image's ${what} would bring you to ${store.bytes + adds} bytes, the limit is ${limits.maxBytesPerUser}` },
    );
  }
  return verdictOf('AddImage', checks);
}

/**
 * The digests a caller must still upload: every object the store lacks, and
 * every object the caller has not uploaded itself unless a shared image
 * holds it. Knowing a digest must never be enough to read a file.
 */
export function missingObjects(digests: Iterable<string>, facts: { inStore(d: string): boolean; proven(d: string): boolean; shared(d: string): boolean }): string[] {
  const out: string[] = [];
  for (const d of digests) if (!facts.inStore(d) || !(facts.proven(d) || facts.shared(d))) out.push(d);
  return out.sort();
}

export interface MountGrant {
  uidMap: IdRange[];
  gidMap: IdRange[];
  noexec: boolean;
}

function hostSideChecks(name: 'uidMap' | 'gidMap', map: IdRange[], own: number, subordinate: { start: number; count: number }[]): Check[] {
  const controlled = controlledIds(own, subordinate);
  const checks: Check[] = shapeProblems(map, name).map((p) => ({ ok: false, reason: 'InvalidRequest' as const, message: p }));
  map.forEach((r, k) => {
    const label = `${name}[${k}] image ${r.from}..${r.from + r.count - 1} -> host ${r.to}..${r.to + r.count - 1}`;
    checks.push(
      covers(controlled, r.to, r.count)
        ? { ok: true, message: `${label}: the host ids are yours` }
        : { ok: false, reason: 'PolicyDenied', message: `${label}: host ids include ids you do not control` },
    );
  });
  return checks;
}

export function decideMountImage(input: {
  caller: CallerIdentity;
  policy: Policy;
  usage: UsageFacts;
  imageId: string;
  /** Undefined when the caller has no such image (whether or not someone else does). */
  image?: ImageFacts;
  missing: string[];
  /** How many objects are missing in all, when `missing` names only the first few. */
  missingCount?: number;
  request: MountRequest;
}): Verdict<MountGrant> {
  const { caller, policy, image } = input;
  const checks = methodChecks('MountImage', caller, policy);
  if (checks.some((c) => !c.ok)) return verdictOf('MountImage', checks);
  checks.push(...limitChecks(policy, input.usage));
  if (!image) {
    checks.push({ ok: false, reason: 'NotFound', message: `you have no image ${input.imageId}; see ListImages (mountgate image ls)` });
    return verdictOf('MountImage', checks);
  }
  checks.push(deviceCheck(image));
  const missing = input.missingCount ?? input.missing.length;
  checks.push(
    missing === 0
      ? { ok: true, message: 'every object of the image is in the store and yours' }
      : {
          ok: false,
          reason: 'NotFound',
          message: `the image lacks ${missing} object(s) you have not uploaded: ${input.missing.slice(0, 5).join(', ')}${missing > 5 ? ', ...' : ''}; upload them with PutObjects`,
        },
  );
  const account = caller.account!;
  const uidMap = input.request.uidMap ?? rootlessMap(caller.uid, account.subuids);
  const gidMap = input.request.gidMap ?? rootlessMap(account.gid, account.subgids);
  checks.push(...hostSideChecks('uidMap', uidMap, caller.uid, account.subuids), ...hostSideChecks('gidMap', gidMap, account.gid, account.subgids));
  checks.push(...systemIdChecks(caller, { uidMap, gidMap }, false));
  checks.push({
    ok: true,
    message: `flags: nosuid, nodev${input.request.noexec ? ', noexec' : ''}, read-only, set on the mount you get and locked (no one it is handed to can clear them); read-only also holds in the filesystems themselves (EROFS and an overlay without an upper layer cannot be written)`,
  });
  return verdictOf('MountImage', checks, { uidMap, gidMap, noexec: input.request.noexec ?? false });
}
