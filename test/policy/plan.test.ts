// planComposefsMount: what the kernel reports decides the plan. With fs-verity
// the overlay asks for verity=require (every data file must carry the digest
// the image names); without it, it does not; file-backed EROFS or a loop device.
import t from 'tap';
import { describePlan, planComposefsMount, type PlanStep } from '../../src/policy/plan.js';

const grant = { uidMap: [{ from: 0, to: 100000, count: 65536 }], gidMap: [{ from: 0, to: 200000, count: 65536 }], noexec: false };
const image = '/var/lib/mountgate/images/x/image.erofs';
const dataDir = '/var/lib/mountgate/store/objects';
const overlayOf = (steps: PlanStep[]) => steps.find((s) => s.step === 'overlay');

t.test('a kernel with fs-verity: the overlay requires verity', async (tt) => {
  const plan = planComposefsMount(grant, image, dataDir, { verity: true, fileBackedErofs: true });
  tt.same(plan.steps.map((s) => s.step), ['userns', 'erofs', 'setattr', 'overlay', 'lock', 'reply']);
  tt.same(overlayOf(plan.steps), { step: 'overlay', dataDir, verity: true, noexec: false });
  tt.match(describePlan(plan).find((l) => l.startsWith('overlay:')), /, verity=require, read-only, nosuid, nodev$/, 'explain says so');
});

t.test('a kernel without fs-verity: no verity option', async (tt) => {
  const plan = planComposefsMount(grant, image, dataDir, { verity: false, fileBackedErofs: true });
  tt.same(overlayOf(plan.steps), { step: 'overlay', dataDir, verity: false, noexec: false });
  tt.notMatch(describePlan(plan).join('\n'), /verity/);
});

t.test('EROFS file-backed where the kernel can, else through a loop device', async (tt) => {
  const erofs = (fileBackedErofs: boolean) => planComposefsMount(grant, image, dataDir, { verity: false, fileBackedErofs }).steps.find((s) => s.step === 'erofs');
  tt.same(erofs(true), { step: 'erofs', image, loop: false });
  tt.same(erofs(false), { step: 'erofs', image, loop: true });
});

t.test('noexec in the grant is set on the overlay, what the caller execs through, and on the layer with the idmap', async (tt) => {
  const plan = planComposefsMount({ ...grant, noexec: true }, image, dataDir, { verity: true, fileBackedErofs: true });
  tt.same(overlayOf(plan.steps), { step: 'overlay', dataDir, verity: true, noexec: true });
  tt.same(plan.steps.find((s) => s.step === 'setattr'), { step: 'setattr', set: ['idmap', 'nosuid', 'nodev', 'noexec'] });
  tt.match(describePlan(plan).find((l) => l.startsWith('overlay:')), /, read-only, nosuid, nodev, noexec$/, 'explain says so');
});
