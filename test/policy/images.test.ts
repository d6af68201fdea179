// decideAddImage for hidden images (the manifest's keptFor), pure: kept only
// for a listed image of the caller's, never for itself or for another hidden
// one, and counted in the limits like any image, with the hidden ones named.
import t from 'tap';
import type { CallerIdentity } from '../../src/policy/decide.js';
import { decideAddImage, type KeptFor } from '../../src/policy/images.js';
import type { Policy } from '../../src/schema/types.generated.js';

const alice: CallerIdentity = { uid: 1000, pid: 1, account: { name: 'alice', gid: 1000, groups: ['alice'], subuids: [{ start: 100000, count: 65536 }], subgids: [{ start: 100000, count: 65536 }] } };
const policy: Policy = { version: 1, methods: { AddImage: { users: ['*'] } }, images: { maxImagesPerUser: 3 } };
const id = (n: number) => n.toString(16).padStart(64, '0');
const decide = (keptFor: KeptFor | undefined, images = 1, hidden = 0) =>
  decideAddImage({ caller: alice, policy, usage: { inFlight: 0, lastMinute: 0 }, image: { entries: 3, bytes: 10, devices: [], metadataBytes: 4096 }, store: { images, hidden, bytes: 0 }, alreadyRegistered: false, imageId: id(9), ...(keptFor ? { keptFor } : {}) });

const rows: [string, KeptFor, boolean, string | undefined, RegExp][] = [
  ['kept for a listed image of hers', { id: id(1), holding: 'listed' }, true, undefined, /kept hidden for your image 0+1: not listed, removed with it/],
  ['kept for an image she does not have', { id: id(1), holding: 'none' }, false, 'NotFound', /you have no image 0+1 to keep this one for/],
  ['kept for a hidden image', { id: id(1), holding: 'hidden' }, false, 'InvalidRequest', /is itself a hidden image kept for another/],
  ['kept for itself', { id: id(9), holding: 'listed' }, false, 'InvalidRequest', /would be kept for itself/],
];
for (const [what, keptFor, allowed, reason, message] of rows) {
  t.test(what, async (t) => {
    const v = decide(keptFor);
    t.equal(v.allowed, allowed);
    if (reason) t.equal(v.error?.reason, reason);
    t.ok(v.checks.some((c) => message.test(c.message)), `a check says so: ${message}`);
  });
}

t.test('hidden images count toward the image limit, and the refusal says how many are hidden', async (t) => {
  const full = decide({ id: id(1), holding: 'listed' }, 3, 1);
  t.equal(full.allowed, false);
  t.equal(full.error?.reason, 'LimitExceeded');
  t.match(full.error?.message, /you have 3 images \(1 of them hidden, kept for layers of your images\), the limit is 3/);
  t.match(decide(undefined, 2, 1).checks.map((c) => c.message).join('\n'), /2 of 3 images in use \(1 of them hidden/);
});
