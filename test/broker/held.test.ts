// The holds ProveObjects leaves (src/broker/held.ts), on a fake clock: what
// a user holds is counted per user, a hold proven again is renewed rather
// than counted twice, a hold by a copy removes its file when it ends, a hold
// by a pin counts the pins of its digest and says when the last one goes,
// and expiry ends holds past their time.
import t from 'tap';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { HeldObjects, heldMs } from '../../src/broker/held.js';

const d1 = 'a'.repeat(64);
const d2 = 'b'.repeat(64);

function fixture(t: Tap.Test) {
  const dir = mkdtempSync(join(tmpdir(), 'mountgate-held-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  let now = 1_000_000;
  const unpinned: string[] = [];
  const held = new HeldObjects(dir, (d) => unpinned.push(d), () => now);
  t.teardown(() => held.stop());
  const file = (name: string) => {
    writeFileSync(join(dir, name), 'x');
    return join(dir, name);
  };
  return { held, file, unpinned, advance: (ms: number) => (now += ms) };
}

t.test('counts per user; a hold proven again is renewed and kept as it was', async (tt) => {
  const { held, file } = fixture(tt);
  file('1000-aa.0');
  tt.equal(held.add(1000, d1, 100, '1000-aa.0'), true, 'new');
  tt.equal(held.add(1000, d1, 100, '1000-bb.0'), false, 'renewed: the second copy is the caller\'s to remove');
  tt.equal(held.get(1000, d1)?.file, '1000-aa.0', 'the first copy still holds it');
  tt.equal(held.add(1000, d2, 50), true, 'a pin');
  tt.equal(held.add(2000, d1, 100), true, 'another user holds it on its own');
  tt.same(held.usage(1000), { objects: 2, bytes: 150 });
  tt.same(held.usage(2000), { objects: 1, bytes: 100 });
  tt.same(held.usage(3000), { objects: 0, bytes: 0 });
  tt.same(held.of(1000).sort(), [[d1, 100], [d2, 50]]);
  tt.ok(held.pinned(d1) && held.pinned(d2), 'd1 pinned by user 2000, d2 by 1000');
});

t.test('release ends a hold: a copy with its file when asked, a pin counted down', async (tt) => {
  const { held, file, unpinned } = fixture(tt);
  const f1 = file('1000-aa.0');
  const f2 = file('1000-aa.1');
  held.add(1000, d1, 100, '1000-aa.0');
  held.add(1000, d2, 50, '1000-aa.1');
  held.release(1000, d1, false);
  tt.ok(existsSync(f1), 'adopted by a rename elsewhere: the file is not ours to remove');
  held.release(1000, d2, true);
  await sleep(50);
  tt.notOk(existsSync(f2), 'removed with the hold');
  tt.same(held.usage(1000), { objects: 0, bytes: 0 });
  held.release(1000, d2, true);
  tt.same(held.of(1000), [], 'releasing twice is harmless');

  held.add(1000, d1, 100);
  held.add(2000, d1, 100);
  held.release(1000, d1, true);
  tt.ok(held.pinned(d1), 'still pinned by the other user');
  tt.same(unpinned, []);
  held.release(2000, d1, true);
  tt.notOk(held.pinned(d1));
  tt.same(unpinned, [d1], 'told once, when the last pin went');
});

t.test(`a hold expires ${heldMs / 60000} minutes after it was last proven, with its file or pin`, async (tt) => {
  const { held, file, advance, unpinned } = fixture(tt);
  const f1 = file('1000-aa.0');
  held.add(1000, d1, 100, '1000-aa.0');
  advance(heldMs / 2);
  held.add(1000, d2, 50);
  tt.equal(held.expire(), 0, 'none yet');
  advance(heldMs / 2);
  tt.equal(held.expire(), 1, 'the first one');
  await sleep(50);
  tt.notOk(existsSync(f1));
  held.add(1000, d2, 50);
  advance(heldMs - 1);
  tt.equal(held.expire(), 0, 'renewed when proven again');
  advance(1);
  tt.equal(held.expire(), 1);
  tt.same(unpinned, [d2]);
  tt.same(held.usage(1000), { objects: 0, bytes: 0 });
});
