// The holds ProveObjects leaves (src/broker/held.ts), on a fake clock: what
// a user holds is counted per user, a hold proven again is renewed rather
// than counted twice, the pins of a digest are counted over users and the
// last one to go is told, and expiry ends holds past their time.
import t from 'tap';
import { HeldObjects, heldMs } from '../../src/broker/held.js';

const d1 = 'a'.repeat(64);
const d2 = 'b'.repeat(64);

function fixture(t: Tap.Test) {
  let now = 1_000_000;
  const unpinned: string[] = [];
  const held = new HeldObjects((d) => unpinned.push(d), () => now);
  t.teardown(() => held.stop());
  return { held, unpinned, advance: (ms: number) => (now += ms) };
}

t.test('counts per user; a hold proven again is renewed, not counted twice', async (tt) => {
  const { held } = fixture(tt);
  tt.equal(held.add(1000, d1, 100), true, 'new');
  tt.equal(held.add(1000, d1, 100), false, 'renewed');
  tt.equal(held.add(1000, d2, 50), true);
  tt.equal(held.add(2000, d1, 100), true, 'another user holds it on its own');
  tt.same(held.usage(1000), { objects: 2, bytes: 150 });
  tt.same(held.usage(2000), { objects: 1, bytes: 100 });
  tt.same(held.usage(3000), { objects: 0, bytes: 0 });
  tt.same(held.of(1000).sort(), [[d1, 100], [d2, 50]]);
  tt.ok(held.get(1000, d2) && !held.get(2000, d2));
  tt.ok(held.pinned(d1) && held.pinned(d2));
});

t.test('release ends a hold; the last pin of a digest to go is told', async (tt) => {
  const { held, unpinned } = fixture(tt);
  held.add(1000, d1, 100);
  held.add(2000, d1, 100);
  held.release(1000, d1);
  tt.ok(held.pinned(d1), 'still pinned by the other user');
  tt.same(unpinned, []);
  held.release(2000, d1);
  tt.notOk(held.pinned(d1));
  tt.same(unpinned, [d1], 'told once, when the last pin went');
  held.release(2000, d1);
  tt.same(unpinned, [d1], 'releasing twice is harmless');
  tt.same(held.usage(2000), { objects: 0, bytes: 0 });
});

t.test(`a hold expires ${heldMs / 60000} minutes after it was last proven`, async (tt) => {
  const { held, advance, unpinned } = fixture(tt);
  held.add(1000, d1, 100);
  advance(heldMs / 2);
  held.add(1000, d2, 50);
  tt.equal(held.expire(), 0, 'none yet');
  advance(heldMs / 2);
  tt.equal(held.expire(), 1, 'the first one');
  tt.same(unpinned, [d1]);
  held.add(1000, d2, 50);
  advance(heldMs - 1);
  tt.equal(held.expire(), 0, 'renewed when proven again');
  advance(1);
  tt.equal(held.expire(), 1);
  tt.same(unpinned, [d1, d2]);
  tt.same(held.usage(1000), { objects: 0, bytes: 0 });
});
