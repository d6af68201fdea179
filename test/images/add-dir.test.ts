// `mountgate image add DIR` as a real user: extended attributes are recorded
// (and read back through the kernel from the mounted image), a value that
// cannot be read is an error naming the file, and owners are right whether
// the client runs on the host or inside a user namespace of the user's own
// (what --dry-run shows, and what the mount shows). Runs as root: it makes
// the users, sets a file capability, and starts the broker.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, type World } from '../helpers/world.js';
import { runAs, type RunResult } from '../helpers/run-as.js';
import { cliPath } from '../helpers/paths.js';
import type { TestUser } from '../helpers/users.js';

let world: World;
t.before(async () => {
  world = await createWorld({
    users: { alice: {} },
    policy: {
      version: 1,
      methods: Object.fromEntries(['AddImage', 'PutObjects', 'MountImage', 'ListImages', 'RemoveImage'].map((m) => [m, { users: ['*'] }])),
      limits: { concurrentRequests: 4, requestsPerMinute: 100000 },
    },
  });
});
t.teardown(() => world?.teardown());

function cli(user: TestUser, args: string[], prefix: string[] = []): Promise<RunResult> {
  return runAs(user, [...prefix, process.execPath, cliPath, ...args], { busAddress: world.bus.address, timeoutMs: 120_000 });
}

const setfattr = (name: string, value: string, path: string) => execFileSync('setfattr', ['-h', '-n', name, '-v', value, path]);

/** alice's tree: her own files, one of her subordinate uid start+5, xattrs of several namespaces. */
function makeTree(): string {
  const alice = world.users.alice!;
  const tree = join(world.dirs.alice!, 'tree');
  mkdirSync(join(tree, 'etc'), { recursive: true });
  writeFileSync(join(tree, 'etc', 'plain'), 'plain\n');
  writeFileSync(join(tree, 'tagged'), 'tagged\n');
  writeFileSync(join(tree, 'ping'), 'not really ping\n');
  writeFileSync(join(tree, 'theirs'), 'a subordinate id owns this\n');
  execFileSync('chown', ['-R', `${alice.uid}:${alice.gid}`, tree]);
  chownSync(join(tree, 'theirs'), alice.subuid.start + 5, alice.subgid.start + 5);
  setfattr('user.hello', 'world', join(tree, 'tagged'));
  setfattr('user.dir', 'on a directory', join(tree, 'etc'));
  execFileSync('setcap', ['cap_net_raw+ep', join(tree, 'ping')]);
  return tree;
}

let tree: string;
t.before(() => { tree = makeTree(); });

t.test('--dry-run on the host: xattrs counted, owners as `mountgate run` shows them, nothing sent', async (t) => {
  const r = await cli(world.users.alice!, ['image', 'add', tree, '--name', 'xa', '--dry-run', '--json']);
  t.equal(r.code, 0, `exits 0${r.code ? `: ${r.stderr}` : ''}`);
  const s = JSON.parse(r.stdout) as { withXattrs: number; uids: Record<string, number>; gids: Record<string, number>; owners: string; objects: number };
  t.equal(s.withXattrs, 3, 'three entries carry xattrs (user.* on a file and a directory, a file capability)');
  t.strictSame(s.uids, { 0: 5, 6: 1 }, "alice's files as 0, subordinate uid start+5 as 6");
  t.strictSame(s.gids, { 0: 5, 6: 1 }, 'the same for groups');
  t.match(s.owners, /as `mountgate run` shows them/, 'says how ids were mapped');
  const ls = await cli(world.users.alice!, ['image', 'ls', '--json']);
  t.strictSame(JSON.parse(ls.stdout), [], 'nothing was registered');
});

t.test('the image holds the xattrs: read back through the kernel from the mount', async (t) => {
  const add = await cli(world.users.alice!, ['image', 'add', tree, '--name', 'xa']);
  t.equal(add.code, 0, `image add exits 0${add.code ? `: ${add.stderr}` : ''}`);
  const r = await cli(world.users.alice!, ['run', '--image', 'xa:/mnt', '--', 'sh', '-c',
    'getfattr --absolute-names --only-values -n user.hello /mnt/tagged; echo; getfattr --absolute-names --only-values -n user.dir /mnt/etc; echo; getcap /mnt/ping; stat -c "%u:%g %n" /mnt/theirs /mnt/tagged']);
  t.equal(r.code, 0, `run --image exits 0${r.code ? `: ${r.stderr}` : ''}`);
  const lines = r.stdout.split('\n');
  t.equal(lines[0], 'world', 'user.hello of a file');
  t.equal(lines[1], 'on a directory', 'user.dir of a directory');
  t.match(lines[2], /^\/mnt\/ping cap_net_raw[=+]ep$/, `the file capability: ${lines[2]}`);
  t.match(r.stdout, /^6:6 \/mnt\/theirs$/m, 'the subordinate id shows as 6 in run, as --dry-run said');
  t.match(r.stdout, /^0:0 \/mnt\/tagged$/m, "alice's own file shows as 0");
});

t.test('an xattr whose value cannot be read is an error naming the file', async (t) => {
  const locked = join(world.dirs.alice!, 'locked');
  mkdirSync(locked);
  const file = join(locked, 'secret');
  writeFileSync(file, '');
  setfattr('user.secret', 'hidden', file);
  // user.* values need read permission on the file; listing them does not.
  chmodSync(file, 0o000);
  execFileSync('chown', ['-R', `${world.users.alice!.uid}:${world.users.alice!.gid}`, locked]);
  const r = await cli(world.users.alice!, ['image', 'add', locked, '--dry-run']);
  t.not(r.code, 0, 'refused');
  t.match(r.stderr, /cannot read the extended attribute user\.secret of .*\/locked\/secret \(EACCES\)/, `names the attribute, the file and why: ${r.stderr.trim()}`);
});

t.test('inside a user namespace: owners as that namespace shows them', async (t) => {
  const alice = world.users.alice!;
  // Only alice's own uid mapped (to 0), as `unshare --map-root-user` does:
  // her files show as 0 there, the subordinate id's as 65534.
  const inNs = await cli(alice, ['image', 'add', tree, '--dry-run', '--json'], ['unshare', '--user', '--map-root-user', '--']);
  t.equal(inNs.code, 0, `exits 0${inNs.code ? `: ${inNs.stderr}` : ''}`);
  const s = JSON.parse(inNs.stdout) as { uids: Record<string, number>; owners: string };
  t.strictSame(s.uids, { 0: 5, 65534: 1 }, 'as ls -ln shows them there');
  t.match(s.owners, /runs in a user namespace \(uid_map 0→\d+/, 'says it found a user namespace, and its map');
  // podman unshare's layout (alice as 0, her subordinate ids as 1..): the
  // same owners as on the host.
  // util-linux 2.38's order: --map-users=OUTER,INNER,COUNT.
  const podmanLike = ['unshare', '--user', '--map-root-user', `--map-users=${alice.subuid.start},1,${alice.subuid.count}`, `--map-groups=${alice.subgid.start},1,${alice.subgid.count}`, '--'];
  const likePodman = await cli(alice, ['image', 'add', tree, '--dry-run', '--json'], podmanLike);
  t.equal(likePodman.code, 0, `in podman unshare's layout: exits 0${likePodman.code ? `: ${likePodman.stderr}` : ''}`);
  t.strictSame((JSON.parse(likePodman.stdout || '{}') as { uids: unknown }).uids, { 0: 5, 6: 1 }, "in podman unshare's layout: the same owners as on the host");
  const keep = await cli(alice, ['image', 'add', tree, '--dry-run', '--json', '--keep-ids'], ['unshare', '--user', '--map-root-user', '--']);
  t.equal(keep.code, 0, `--keep-ids exits 0${keep.code ? `: ${keep.stderr}` : ''}`);
  t.strictSame((JSON.parse(keep.stdout) as { uids: unknown }).uids, { [alice.uid]: 5, 65534: 1 }, '--keep-ids: the parent namespace\'s ids (alice\'s host uid)');
});

t.test('added from inside a user namespace, the image mounts with the owners seen there', async (t) => {
  const alice = world.users.alice!;
  const add = await cli(alice, ['image', 'add', tree, '--name', 'fromns'], ['unshare', '--user', '--map-root-user', '--']);
  t.equal(add.code, 0, `image add inside the namespace exits 0${add.code ? `: ${add.stderr}` : ''}`);
  const r = await cli(alice, ['run', '--image', 'fromns:/mnt', '--', 'stat', '-c', '%u %n', '/mnt/tagged', '/mnt/theirs']);
  t.equal(r.code, 0, `run --image exits 0${r.code ? `: ${r.stderr}` : ''}`);
  t.equal(r.stdout, '0 /mnt/tagged\n65534 /mnt/theirs\n', "alice's file as 0; the unmapped owner as the 65534 it showed there");
});

t.test('identical content added again under a new --name: the image answers to the new name', async (t) => {
  const alice = world.users.alice!;
  const first = await cli(alice, ['image', 'add', tree, '--name', 'before', '--json']);
  t.equal(first.code, 0, `first add exits 0${first.code ? `: ${first.stderr}` : ''}`);
  const again = await cli(alice, ['image', 'add', tree, '--name', 'after', '--json']);
  t.equal(again.code, 0, `second add exits 0${again.code ? `: ${again.stderr}` : ''}`);
  t.equal((JSON.parse(again.stdout) as { id: string }).id, (JSON.parse(first.stdout) as { id: string }).id, 'the same image');
  const r = await cli(alice, ['run', '--image', 'after:/mnt', '--', 'cat', '/mnt/tagged']);
  t.equal(r.code, 0, `run --image after works${r.code ? `: ${r.stderr}` : ''}`);
  t.equal(r.stdout, 'tagged\n');
  const ls = JSON.parse((await cli(alice, ['image', 'ls', '--json'])).stdout) as { name?: string }[];
  t.ok(ls.some((i) => i.name === 'after') && !ls.some((i) => i.name === 'before'), 'image ls shows the new name, not the old one');
});
