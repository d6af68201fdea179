import t from 'tap';
import { groupsOf, parseGroup, parsePasswd, parseSubIds, subIdsOf } from '../../src/accounts/parse.js';

t.test('passwd, group and subid files parse, skipping malformed lines', async (tt) => {
  const users = parsePasswd('root:x:0:0:root:/root:/bin/bash\n# comment\nalice:x:1000:1000::/home/alice:/bin/sh\nbroken:x:notanumber:1\n');
  tt.same(users.map((u) => [u.name, u.uid, u.gid]), [['root', 0, 0], ['alice', 1000, 1000]]);
  const groups = parseGroup('alice:x:1000:\ndev:x:2000:bob,alice\nwheel:x:10:root\n');
  tt.same(groupsOf(groups, users[1]!), ['alice', 'dev']);
  const subs = parseSubIds('alice:100000:65536\n1000:300000:10\nbob:200000:65536\nbad:1:0\nhuge:4294967290:100\n');
  tt.same(subIdsOf(subs, 'alice', 1000), [{ start: 100000, count: 65536 }, { start: 300000, count: 10 }], 'by name and by uid');
  tt.same(subIdsOf(subs, 'carol', 1002), []);
  tt.equal(subs.length, 3, 'zero-length and overflowing ranges are dropped');
});
