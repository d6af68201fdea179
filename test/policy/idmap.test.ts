import t from 'tap';
import { controlledIds, covers, identityMap, mapKey, normalize, shapeProblems, subtract, toProcMap } from '../../src/policy/idmap.js';

t.test('normalize merges touching and overlapping intervals', async (tt) => {
  tt.same(normalize([{ start: 5, end: 10 }, { start: 0, end: 5 }, { start: 8, end: 12 }, { start: 20, end: 20 }]), [{ start: 0, end: 12 }]);
});

t.test('controlledIds is the own id plus the subordinate ranges', async (tt) => {
  tt.same(controlledIds(1000, [{ start: 100000, count: 65536 }]), [{ start: 1000, end: 1001 }, { start: 100000, end: 165536 }]);
  tt.same(controlledIds(1000, []), [{ start: 1000, end: 1001 }]);
});

t.test('covers needs every id of the range inside the union', async (tt) => {
  const u = controlledIds(1000, [{ start: 100000, count: 10 }]);
  tt.ok(covers(u, 1000, 1));
  tt.ok(covers(u, 100000, 10));
  tt.notOk(covers(u, 100000, 11), 'one past the end');
  tt.notOk(covers(u, 999, 2), 'one before the own id');
  tt.notOk(covers(u, 0, 1));
  tt.ok(covers(normalize([{ start: 0, end: 5 }, { start: 5, end: 10 }]), 0, 10), 'adjacent intervals cover across the seam');
});

t.test('subtract removes single ids', async (tt) => {
  tt.same(subtract([{ start: 0, end: 10 }], [0, 5]), [{ start: 1, end: 5 }, { start: 6, end: 10 }]);
});

t.test('identityMap maps each interval to itself', async (tt) => {
  tt.same(identityMap([{ start: 7, end: 9 }]), [{ from: 7, to: 7, count: 2 }]);
});

t.test('shapeProblems finds overlaps on either side and overflow', async (tt) => {
  tt.same(shapeProblems([{ from: 0, to: 100, count: 10 }, { from: 10, to: 200, count: 10 }], 'uidMap'), []);
  tt.match(shapeProblems([{ from: 0, to: 100, count: 10 }, { from: 5, to: 200, count: 10 }], 'uidMap').join(), /overlap on the on-disk side/);
  tt.match(shapeProblems([{ from: 0, to: 100, count: 10 }, { from: 50, to: 105, count: 10 }], 'uidMap').join(), /overlap on the host side/);
  tt.match(shapeProblems([{ from: 4294967290, to: 0, count: 10 }], 'gidMap').join(), /gidMap\[0\] runs past the largest id/);
  tt.match(shapeProblems(Array.from({ length: 341 }, (_, k) => ({ from: k, to: k, count: 1 })), 'uidMap').join(), /at most 340/);
});

t.test('toProcMap writes the kernel format and mapKey ignores order', async (tt) => {
  tt.equal(toProcMap([{ from: 0, to: 1000, count: 1 }]), '0 1000 1\n');
  const a = [{ from: 0, to: 1, count: 1 }, { from: 5, to: 6, count: 1 }];
  tt.equal(mapKey(a, a), mapKey([...a].reverse(), a));
});
