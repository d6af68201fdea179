// The holds ProveObjects leaves (src/broker/held.ts), on a fake clock: what
// a user holds is counted per user, a hold proven again is renewed rather
// than counted twice, release and expiry remove the held file, and nothing
// of one user's touches another's.
import t from 'tap';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { HeldObjects, heldMs, heldName } from '../../src/broker/held.js';

const d1 = 'a'.repeat(64);
const d2 = 'b'.repeat(64);

function fixture(t: Tap.Test) {
  const dir = mkdtempSync(join(tmpdir(), 'mountgate-held-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  let now = 1_000_000;
  const held = new HeldObjects(dir, () => now);
  t.teardown(() => held.stop());
  const file = (uid: number, d: string) => {
    writeFileSync(join(dir, heldName(uid, d)), 'x');
    return join(dir, heldName(uid, d));
  };
  return { dir, held, file, advance: (ms: number) => (now += ms) };
}

t.test('counts per user; a hold proven again is renewed, not counted twice', async (tt) => {
  const { held, file } = fixture(tt);
  file(1000, d1);
  tt.equal(held.add(1000, d1, 100), true, 'new');
  tt.equal(held.add(1000, d1, 100), false, 'renewed');
  tt.equal(held.add(1000, d2, 50), true);
  tt.equal(held.add(2000, d1, 100), true, 'another user holds it on its own');
  tt.same(held.usage(1000), { objects: 2, bytes: 150 });
  tt.same(held.usage(2000), { objects: 1, bytes: 100 });
  tt.same(held.usage(3000), { objects: 0, bytes: 0 });
  tt.same(held.of(1000).sort(), [[d1, 100], [d2, 50]]);
  tt.ok(held.has(1000, d2) && !held.has(2000, d2));
});

t.test('release ends a hold, with its file when asked; a user with none is forgotten', async (tt) => {
  const { held, file } = fixture(tt);
  const f1 = file(1000, d1);
  const f2 = file(1000, d2);
  held.add(1000, d1, 100);
  held.add(1000, d2, 50);
  held.release(1000, d1, false);
  tt.same(held.usage(1000), { objects: 1, bytes: 50 });
  tt.ok(existsSync(f1), 'adopted by a rename elsewhere: the file is not ours to remove');
  held.release(1000, d2, true);
  await sleep(50);
  tt.notOk(existsSync(f2), 'removed with the hold');
  tt.same(held.usage(1000), { objects: 0, bytes: 0 });
  held.release(1000, d2, true);
  tt.same(held.of(1000), [], 'releasing twice is harmless');
});

t.test(`a hold expires ${heldMs / 60000} minutes after it was last proven, with its file`, async (tt) => {
  const { held, file, advance } = fixture(tt);
  const f1 = file(1000, d1);
  const f2 = file(1000, d2);
  held.add(1000, d1, 100);
  advance(heldMs / 2);
  held.add(1000, d2, 50);
  tt.equal(held.expire(), 0, 'none yet');
  advance(heldMs / 2);
  tt.equal(held.expire(), 1, 'the first one');
  await sleep(50);
  tt.notOk(existsSync(f1));
  tt.ok(existsSync(f2));
  held.add(1000, d2, 50);
  advance(heldMs - 1);
  tt.equal(held.expire(), 0, 'renewed when proven again');
  advance(1);
  tt.equal(held.expire(), 1);
  tt.same(held.usage(1000), { objects: 0, bytes: 0 });
});
