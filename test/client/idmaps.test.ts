import t from 'tap';
import { composeIdMaps, hostIdOf, keepIdMap, namespaceMap, ownerMap, parseUsernsOption, toolboxIdMap } from '../../src/client/idmaps.js';
import { parseBindSpec } from '../../src/cli/bind-spec.js';

const subs = [{ start: 100000, count: 65536 }];

t.test('namespaceMap is the rootless layout', async (tt) => {
  const m = namespaceMap(1000, subs);
  tt.same(m, [{ from: 0, to: 1000, count: 1 }, { from: 1, to: 100000, count: 65536 }]);
  tt.equal(hostIdOf(m, 0), 1000);
  tt.equal(hostIdOf(m, 1000), 100999);
  tt.equal(hostIdOf(m, 70000), undefined);
});

t.test('ownerMap swaps the own id with the host id of the wanted inner id', async (tt) => {
  const m = ownerMap(1000, subs, namespaceMap(1000, subs), 1000);
  tt.same(m.slice(0, 2), [{ from: 1000, to: 100999, count: 1 }, { from: 100999, to: 1000, count: 1 }]);
  tt.same(m.slice(2), [{ from: 100000, to: 100000, count: 999 }, { from: 101000, to: 101000, count: 64536 }], 'the rest is identity');
  tt.same(ownerMap(1000, subs, namespaceMap(1000, subs), 0), [{ from: 1000, to: 1000, count: 1 }, { from: 100000, to: 100000, count: 65536 }], 'owner=0 is the identity');
  tt.throws(() => ownerMap(1000, subs, namespaceMap(1000, subs), 70000), /not mapped in your namespace/);
});

t.test('--bind specs', async (tt) => {
  tt.same(parseBindSpec('/a:/b'), { source: '/a', target: '/b', readOnly: false, noexec: false });
  tt.same(parseBindSpec('/a:/b:ro,owner=1000'), { source: '/a', target: '/b', readOnly: true, noexec: false, uid: 1000, gid: 1000 });
  tt.throws(() => parseBindSpec('/a'), /expected SRC:DST/);
  tt.throws(() => parseBindSpec('/a:rel'), /must be an absolute path/);
  tt.throws(() => parseBindSpec('/a:/b:suid'), /unknown option "suid"/);
  tt.throws(() => parseBindSpec('/a:/b:uid=x'), /numeric id/);
});

t.test('keepIdMap is the map podman 4.3 gives a --userns keep-id container', async (tt) => {
  // Measured: uid 1018 with 1001114112:65536 saw, in the container's
  // /proc/self/uid_map (parent: the pause process's namespace)
  // "0 1 1018 / 1018 0 1 / 1019 1019 64518".
  const pause = namespaceMap(1018, [{ start: 1001114112, count: 65536 }]);
  const m = keepIdMap(pause, 1018);
  tt.same(m, [
    { from: 0, to: 1001114112, count: 1018 },
    { from: 1018, to: 1018, count: 1 },
    { from: 1019, to: 1001114112 + 1018, count: 64518 },
  ], 'through the pause map to host ids');
  tt.same(composeIdMaps([{ from: 0, to: 1, count: 1018 }, { from: 1018, to: 0, count: 1 }, { from: 1019, to: 1019, count: 64518 }], pause), m, 'the measured layout composed with the pause map');
  tt.equal(hostIdOf(m, 0), 1001114112, "the container's root is the first subordinate id");
  tt.equal(hostIdOf(m, 42), 1001114112 + 42, 'gid 42 stays 42 (the default layout would show it as 41)');
});

t.test('keepIdMap for keep-id:uid=N is the map podman 4.3.1 gives, also for N beyond the namespace', async (tt) => {
  // Measured in a container's /proc/self/uid_map, in a pause namespace of 65537 ids.
  const pause = namespaceMap(1001, [{ start: 1000000000, count: 65536 }]);
  tt.same(keepIdMap(pause, 200), composeIdMaps([{ from: 0, to: 1, count: 200 }, { from: 200, to: 0, count: 1 }, { from: 201, to: 201, count: 65336 }], pause), 'keep-id:uid=200: "0 1 200 / 200 0 1 / 201 201 65336"');
  tt.equal(hostIdOf(keepIdMap(pause, 200), 200), 1001, 'container uid 200 is you');
  tt.same(keepIdMap(pause, 70000), composeIdMaps([{ from: 0, to: 1, count: 65536 }, { from: 70000, to: 0, count: 1 }], pause), 'keep-id:uid=70000: "0 1 65536 / 70000 0 1"');
  tt.same(keepIdMap(pause, 0), pause, 'uid=0 is the namespace\'s own layout');
});

t.test('parseUsernsOption takes podman\'s keep-id forms and refuses others by name', async (tt) => {
  tt.same(parseUsernsOption('keep-id'), {});
  tt.same(parseUsernsOption('keep-id:uid=1000,gid=1000'), { uid: 1000, gid: 1000 });
  tt.same(parseUsernsOption('keep-id:gid=5'), { gid: 5 });
  tt.throws(() => parseUsernsOption('auto'), /only keep-id/);
  tt.throws(() => parseUsernsOption('keep-id:'), /"" is not uid=N or gid=N/);
  tt.throws(() => parseUsernsOption('keep-id:uid=-1'), /"uid=-1" is not uid=N/);
  tt.throws(() => parseUsernsOption('keep-id:uid=4294967295'), /not uid=N/);
  tt.throws(() => parseUsernsOption('keep-id:uid=1,uid=2'), /uid is given twice/);
  tt.throws(() => parseUsernsOption('keep-id:size=10'), /"size=10" is not uid=N/);
});

t.test('composeIdMaps splits a range across the outer map', async (tt) => {
  tt.same(composeIdMaps([{ from: 10, to: 0, count: 3 }], [{ from: 0, to: 500, count: 1 }, { from: 1, to: 900, count: 5 }]), [{ from: 10, to: 500, count: 1 }, { from: 11, to: 900, count: 2 }]);
  tt.throws(() => composeIdMaps([{ from: 0, to: 7, count: 1 }], [{ from: 0, to: 500, count: 1 }]), /id 7 is not mapped/);
});

t.test('toolboxIdMap keeps the own id and fills every other id from the subordinate ranges', async (tt) => {
  tt.same(toolboxIdMap(1000, subs), [
    { from: 0, to: 100000, count: 1000 },
    { from: 1000, to: 1000, count: 1 },
    { from: 1001, to: 101000, count: 64536 },
  ]);
  tt.same(toolboxIdMap(5, [{ start: 200, count: 3 }, { start: 300, count: 4 }]), [
    { from: 0, to: 200, count: 3 },
    { from: 3, to: 300, count: 2 },
    { from: 5, to: 5, count: 1 },
    { from: 6, to: 302, count: 2 },
  ], 'ranges split around the own id, in order');
  tt.same(toolboxIdMap(1000, [{ start: 100000, count: 10 }]), [{ from: 0, to: 100000, count: 10 }, { from: 1000, to: 1000, count: 1 }], 'too few subordinate ids: a gap below the own id');
});
