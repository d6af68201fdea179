// The image methods as unprivileged users see them, against a real broker:
// proof of possession, ownership, refusals of bad manifests and uploads,
// quotas, and a store that a SIGKILL in the middle of an upload cannot corrupt.
import t from 'tap';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { FsVerityHasher } from '../../src/verity/fsverity.js';
import { runAs } from '../helpers/run-as.js';
import { pkgRoot } from '../helpers/paths.js';
import { startBroker } from '../helpers/broker.js';
import { createWorld, type World } from '../helpers/world.js';
import type { TestUser } from '../helpers/users.js';

const probe = join(pkgRoot, 'test', 'helpers', 'probe-client.mjs');
const all = { users: ['*'] };
let world: World;

t.before(async () => {
  world = await createWorld({
    users: { alice: {}, bob: {}, carol: {}, daemon: { system: true } },
    policy: {
      version: 1,
      methods: { AddImage: all, PutObjects: all, MountImage: all, ListImages: all, RemoveImage: all, Explain: all },
      limits: { concurrentRequests: 8, requestsPerMinute: 100000 },
      images: { maxImagesPerUser: 4, maxEntriesPerImage: 200_000 },
    },
  });
});
t.teardown(() => world?.teardown());

type Reply = { ok: boolean; name?: string; message?: string; id?: string; missing?: string[]; [k: string]: unknown };

async function probeAs(user: TestUser, ops: unknown[], broker = world.broker): Promise<Reply[]> {
  void broker;
  const r = await runAs(user, [process.execPath, probe, JSON.stringify(ops)], { busAddress: world.bus.address });
  if (r.code !== 0) throw new Error(`probe failed (${r.code}): ${r.stderr}`);
  return r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Reply);
}

const mtime = { sec: 1700000000, nsec: 5 };
const digestOf = (content: string) => new FsVerityHasher().update(Buffer.from(content)).digest().toString('hex');

function manifest(files: Record<string, string>, extra: object[] = []): object {
  const entries: object[] = [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime }];
  for (const [name, content] of Object.entries(files).sort()) {
    entries.push({ path: `/${name}`, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size: Buffer.byteLength(content), digest: digestOf(content) });
  }
  return { version: 1, entries: [...entries, ...extra] };
}

const objectsDir = () => join(world.broker.stateDir, 'store', 'objects');
function storeObjects(): string[] {
  const dir = objectsDir();
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((p) => readdirSync(join(dir, p)).map((r) => p + r));
}
const tmpFiles = () => readdirSync(join(world.broker.stateDir, 'store', 'tmp'));

const shared = 'shared content, '.repeat(500);

t.test('a user adds an image, uploads its objects and mounts it', async (tt) => {
  const [added, put, mounted, listed] = await probeAs(world.users.alice!, [
    { op: 'addImage', manifest: manifest({ 'a.txt': shared, 'only-alice.txt': 'alice private\n' }) },
    { op: 'putObjects', records: [{ digest: digestOf(shared), content: shared }, { digest: digestOf('alice private\n'), content: 'alice private\n' }] },
    { op: 'mountImage', id: 'PLACEHOLDER' },
    { op: 'listImages' },
  ].map((op, k, ops) => op));
  tt.ok(added!.ok, 'AddImage answered');
  tt.same(added!.missing!.sort(), [digestOf(shared), digestOf('alice private\n')].sort(), 'both objects reported missing');
  tt.same(put, { ok: true, objects: 2, bytes: Buffer.byteLength(shared) + 14 }, 'both uploaded and verified');
  tt.equal(mounted!.ok, false, 'an unknown image id is refused');
  tt.equal(mounted!.name, 'org.mountgate.Error.NotFound');
  const [m] = await probeAs(world.users.alice!, [{ op: 'mountImage', id: added!.id }]);
  tt.ok(m!.ok, `MountImage returned a mount (${m!.message ?? ''})`);
  tt.equal((listed!.images as { missing: number }[])[0]!.missing, 0, 'ListImages shows nothing missing');
  tt.same(storeObjects().sort(), [digestOf(shared), digestOf('alice private\n')].sort(), 'the store holds exactly the two objects');
});

t.test('MountImage with noexec: a program in the image does not run through the mount the user gets; without it, it does', async (tt) => {
  const script = '#!/bin/sh\necho ran\n';
  const [added] = await probeAs(world.users.alice!, [
    { op: 'addImage', manifest: manifest({}, [{ path: '/x', type: 'file', mode: 0o755, uid: 0, gid: 0, mtime, size: script.length, inline: Buffer.from(script).toString('base64') }]) },
  ]);
  tt.ok(added!.ok, `AddImage answered (${added!.message ?? ''})`);
  const [refused, ran] = await probeAs(world.users.alice!, [
    { op: 'mountImage', id: added!.id, request: { noexec: true }, exec: 'x' },
    { op: 'mountImage', id: added!.id, exec: 'x' },
  ]);
  tt.ok(refused!.ok && ran!.ok, 'both mounts granted');
  tt.equal(refused!.ran, 'EACCES', 'noexec holds on the mount the caller execs through');
  tt.equal(ran!.ran, 'ran', 'without noexec the program runs');
  const [removed] = await probeAs(world.users.alice!, [{ op: 'removeImage', id: added!.id }]);
  tt.ok(removed!.ok, 'removed again');
});

t.test("a system account's MountImage is refused (no map reaches ids below UID_MIN: the policy says so, and the executor holds to it), and the broker goes on serving", async (tt) => {
  const daemon = world.users.daemon!;
  tt.ok(daemon.uid < 1000, `a system account (uid ${daemon.uid})`);
  const [added] = await probeAs(daemon, [{ op: 'addImage', manifest: manifest({}) }]);
  tt.ok(added!.ok, `AddImage answered (${added!.message ?? ''})`);
  const [refused] = await probeAs(daemon, [{ op: 'mountImage', id: added!.id }]);
  tt.equal(refused!.ok, false, 'no mount');
  tt.equal(refused!.name, 'org.mountgate.Error.PolicyDenied');
  tt.match(refused!.message, new RegExp(`uidMap\\[0\\] 0 -> ${daemon.uid}: host ids ${daemon.uid} include ids of system accounts \\(below UID_MIN`), `its reason: ${refused!.message}`);
  const [ok] = await probeAs(world.users.alice!, [{ op: 'addImage', manifest: manifest({}) }]);
  const [mounted] = await probeAs(world.users.alice!, [{ op: 'mountImage', id: ok!.id }]);
  tt.ok(mounted!.ok, `then alice's MountImage is granted (${mounted!.message ?? ''})`);
  await probeAs(daemon, [{ op: 'removeImage', id: added!.id }]);
  await probeAs(world.users.alice!, [{ op: 'removeImage', id: ok!.id }]);
});

t.test('Explain shows the composefs plan for an image, and refuses for a stranger', async (tt) => {
  const [list] = await probeAs(world.users.alice!, [{ op: 'listImages' }]);
  const id = (list!.images as { id: string }[])[0]!.id;
  const [info, mine] = await probeAs(world.users.alice!, [{ op: 'info' }, { op: 'explain', method: 'MountImage', request: { imageId: id, request: {} } }]);
  const v = mine!.verdict as { allowed: boolean; plan: { steps: { step: string; verity?: boolean }[]; text: string[] } };
  tt.equal(v.allowed, true);
  tt.match(v.plan.text.join('\n'), /erofs: fsopen\(erofs\)[^]*setattr: mount_setattr\(idmap, nosuid, nodev\)[^]*overlay: lowerdir\+=/, 'erofs, idmap, overlay');
  // The plan follows the broker's own probe (GetInfo, the ready line): here no
  // fs-verity (CONFIG_FS_VERITY is off); on a kernel with it, verity=require.
  const fsVerity = (info!.info as { fsVerity: boolean }).fsVerity;
  tt.type(fsVerity, 'boolean', `GetInfo reports fsVerity=${String(fsVerity)}`);
  tt.equal((world.broker.audit.find((l) => l.event === 'ready')!.features as { fsVerity: boolean }).fsVerity, fsVerity, 'as probed at start');
  tt.equal(v.plan.steps.find((s) => s.step === 'overlay')!.verity, fsVerity, 'the overlay step asks for verity exactly when the broker found fs-verity');
  tt.equal(/verity=require/.test(v.plan.text.join('\n')), fsVerity, 'and explain says so');
  const [theirs] = await probeAs(world.users.carol!, [{ op: 'explain', method: 'MountImage', request: { imageId: id, request: {} } }]);
  const d = theirs!.verdict as { allowed: boolean; error: { name: string } };
  tt.equal(d.allowed, false);
  tt.equal(d.error.name, 'org.mountgate.Error.NotFound', "another user's image is not even acknowledged");
});

t.test('a second user with the same files must upload them too, and the store gains no bytes', async (tt) => {
  const before = statSync(join(objectsDir(), digestOf(shared).slice(0, 2), digestOf(shared).slice(2)));
  const [added, early, put, mounted] = await probeAs(world.users.bob!, [
    { op: 'addImage', manifest: manifest({ 'b.txt': shared }) },
    { op: 'mountImage', id: '$added' },
    { op: 'putObjects', records: [{ digest: digestOf(shared), content: shared }] },
    { op: 'listImages' },
  ]);
  tt.same(added!.missing, [digestOf(shared)], 'reported missing although the store has it: bob has not proven he holds it');
  tt.equal(early!.ok, false, 'mounting before the upload is refused');
  tt.equal(early!.name, 'org.mountgate.Error.NotFound');
  tt.match(early!.message, new RegExp(`lacks 1 object\\(s\\) you have not uploaded: ${digestOf(shared)}`), 'the object the store already holds is one bob has not uploaded');
  tt.same(put, { ok: true, objects: 1, bytes: Buffer.byteLength(shared) }, 'bob uploads the bytes');
  tt.equal((mounted!.images as { missing: number }[])[0]!.missing, 0);
  const after = statSync(join(objectsDir(), digestOf(shared).slice(0, 2), digestOf(shared).slice(2)));
  tt.equal(after.ino, before.ino, 'the stored object is the same file: no new bytes in the store');
  tt.equal(storeObjects().length, 2);
});

t.test("knowing another user's digest is not enough to read its file", async (tt) => {
  const secret = digestOf('alice private\n');
  const [added, mount, forged] = await probeAs(world.users.carol!, [
    { op: 'addImage', manifest: manifest({ 'stolen.txt': 'alice private\n' }) },
    { op: 'mountImage', id: '$added' },
    { op: 'putObjects', records: [{ digest: secret, content: 'alice privatX\n' }] },
  ]);
  tt.same(added!.missing, [secret], "alice's digest is reported missing to carol");
  tt.equal(mount!.ok, false, 'naming the digest in a manifest is not enough to mount it');
  tt.equal(mount!.name, 'org.mountgate.Error.NotFound');
  tt.match(mount!.message, new RegExp(`lacks 1 object\\(s\\) you have not uploaded: ${secret}`));
  tt.equal(forged!.name, 'org.mountgate.Error.InvalidRequest', 'an upload whose bytes do not match is refused');
  tt.match(forged!.message, /hashes to [0-9a-f]{64}; nothing of it was stored/);
  const [m] = await probeAs(world.users.carol!, [{ op: 'mountImage', id: added!.id }]);
  tt.equal(m!.name, 'org.mountgate.Error.NotFound', 'carol cannot mount it');
  tt.match(m!.message, new RegExp(`lacks 1 object\\(s\\) you have not uploaded: ${secret}`));
  tt.same(tmpFiles(), [], 'the refused upload left nothing behind');
  tt.equal(storeObjects().length, 2, 'the store is unchanged');
});

t.test("a user cannot mount or remove another user's image", async (tt) => {
  const [alices] = await probeAs(world.users.alice!, [{ op: 'listImages' }]);
  const id = (alices!.images as { id: string }[])[0]!.id;
  const [mount, remove] = await probeAs(world.users.carol!, [{ op: 'mountImage', id }, { op: 'removeImage', id }]);
  tt.equal(mount!.name, 'org.mountgate.Error.NotFound');
  tt.match(mount!.message, /you have no image/);
  tt.equal(remove!.name, 'org.mountgate.Error.NotFound');
  const [still] = await probeAs(world.users.alice!, [{ op: 'listImages' }]);
  tt.equal((still!.images as unknown[]).length, 1, "alice's image is still there");
});

t.test('a digest that was never uploaded: listed at AddImage and at MountImage', async (tt) => {
  const ghost = 'ab'.repeat(32);
  const m = manifest({}, [{ path: '/ghost', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size: 5, digest: ghost }]);
  const [added] = await probeAs(world.users.bob!, [{ op: 'addImage', manifest: m }]);
  tt.same(added!.missing, [ghost]);
  const [mount] = await probeAs(world.users.bob!, [{ op: 'mountImage', id: added!.id }]);
  tt.equal(mount!.name, 'org.mountgate.Error.NotFound');
  tt.match(mount!.message, new RegExp(ghost));
  const [put] = await probeAs(world.users.bob!, [{ op: 'putObjects', records: [{ digest: digestOf('x'), content: 'x' }] }]);
  tt.match(put!.message, /is not missing from any of your images/, 'objects no image needs are refused');
  await probeAs(world.users.bob!, [{ op: 'removeImage', id: added!.id }]);
});

const dirEntry = (path: string) => ({ path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime });
const badManifests: { name: string; manifest: () => unknown; synthetic?: number; error: string; reason: RegExp }[] = [
  {
    name: 'a device node',
    manifest: () => manifest({}, [{ path: '/dev-null', type: 'chardev', mode: 0o666, uid: 0, gid: 0, mtime, rdev: 259 }]),
    error: 'PolicyDenied',
    reason: /contains device nodes \(\/dev-null\)/,
  },
  {
    // The build names the first three and counts the rest: the front never reads every path.
    name: 'many device nodes',
    manifest: () => manifest({}, Array.from({ length: 5 }, (_, k) => ({ path: `/dev${k}`, type: 'chardev', mode: 0o666, uid: 0, gid: 0, mtime, rdev: 259 }))),
    error: 'PolicyDenied',
    reason: /contains device nodes \(\/dev0, \/dev1, \/dev2, and 2 more\)/,
  },
  { name: 'a ".." name', manifest: () => manifest({}, [dirEntry('/..')]), error: 'InvalidRequest', reason: /\.\./ },
  { name: 'an empty name ("//")', manifest: () => manifest({}, [dirEntry('/a//b')]), error: 'InvalidRequest', reason: /entries\/1\/path/ },
  { name: 'a NUL byte in a name', manifest: () => manifest({}, [dirEntry('/a\u0000b')]), error: 'InvalidRequest', reason: /NUL|entries\/1\/path/ },
  {
    name: 'an oversized xattr',
    manifest: () => manifest({}, [{ ...dirEntry('/x'), xattrs: { 'user.big': Buffer.alloc(70000).toString('base64') } }]),
    error: 'InvalidRequest',
    reason: /xattr/,
  },
  {
    name: 'too many entries for the policy',
    synthetic: 200_001,
    manifest: () => undefined,
    error: 'LimitExceeded',
    reason: /200001 entries; the policy allows at most 200000/,
  },
  { name: 'a manifest that is not JSON', manifest: () => '{"version": 1, "entries": [', error: 'InvalidRequest', reason: /not valid JSON/ },
  {
    name: 'a backing path that is not the digest',
    manifest: () => ({ version: 1, entries: [dirEntry('/'), { path: '/f', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size: 1, digest: digestOf('x'), backing: '../../etc/shadow' }] }),
    error: 'InvalidRequest',
    reason: /objects are stored by digest/,
  },
];

for (const bad of badManifests) {
  t.test(`AddImage refuses ${bad.name}`, async (tt) => {
    const [r] = await probeAs(world.users.carol!, [{ op: 'addImage', manifest: bad.manifest(), synthetic: bad.synthetic }]);
    tt.equal(r!.ok, false, 'refused');
    tt.equal(r!.name, `org.mountgate.Error.${bad.error}`);
    tt.match(r!.message ?? '', bad.reason, 'the message names the reason');
    const [info] = await probeAs(world.users.bob!, [{ op: 'listImages' }]);
    tt.ok(info!.ok, 'the broker still serves the next caller');
  });
}

t.test('a big AddImage is built off the main thread: others are answered meanwhile', async (tt) => {
  const start = Date.now();
  let bigDone = 0;
  const big = probeAs(world.users.bob!, [{ op: 'addImage', synthetic: 150_000 }]).then((r) => {
    bigDone = Date.now();
    return r;
  });
  await new Promise((res) => setTimeout(res, 300));
  const [other] = await probeAs(world.users.alice!, [{ op: 'listImages' }]);
  const otherDone = Date.now();
  const [added] = await big;
  tt.equal(other!.ok, true, 'alice was answered');
  tt.equal((other!.images as { id: string }[]).length, 1, 'with her one image');
  tt.equal(added!.ok, true, `bob's 150,000-entry image was added (${added!.message ?? ''})`);
  tt.ok(otherDone < bigDone, `alice's answer came before bob's image was done (at +${otherDone - start} ms and +${bigDone - start} ms)`);
  await probeAs(world.users.bob!, [{ op: 'removeImage', id: added!.id }]);
});

t.test('the image quota is enforced', async (tt) => {
  const ops = [1, 2, 3, 4, 5].map((k) => ({ op: 'addImage', manifest: manifest({}, [dirEntry(`/quota${k}`)]) }));
  const replies = await probeAs(world.users.carol!, ops);
  // carol already has one image (the "stolen" one): 3 more fit under the limit of 4.
  tt.same(replies.map((r) => r.ok), [true, true, true, false, false]);
  tt.equal(replies[3]!.name, 'org.mountgate.Error.LimitExceeded');
  tt.match(replies[3]!.message, /quota exceeded: you have 4 images, the limit is 4/);
});

t.test('removing the last registration removes the image and its unreferenced objects', async (tt) => {
  const [list] = await probeAs(world.users.alice!, [{ op: 'listImages' }]);
  const id = (list!.images as { id: string }[])[0]!.id;
  const [removed] = await probeAs(world.users.alice!, [{ op: 'removeImage', id }]);
  tt.ok(removed!.ok);
  tt.ok(storeObjects().includes(digestOf(shared)), "the object bob's image still uses stays");
  tt.ok(storeObjects().includes(digestOf('alice private\n')), "alice's private object stays while carol's image names it (carol still cannot read it)");
  const [carols] = await probeAs(world.users.carol!, [{ op: 'listImages' }]);
  const stolen = (carols!.images as { id: string; missing: number }[]).find((i) => i.missing === 1)!;
  const mark = world.broker.audit.length;
  await probeAs(world.users.carol!, [{ op: 'removeImage', id: stolen.id }]);
  // The file goes after the call, off the event loop: the front says when.
  await world.broker.waitFor((l) => l.event === 'store' && world.broker.audit.indexOf(l) >= mark);
  tt.notOk(storeObjects().includes(digestOf('alice private\n')), 'once no image names it, the object is removed');
});

t.test('the same manifest again, by its user or another, is not built again while its image is stored; once the image is gone, it is', async (tt) => {
  const m = manifest({ 'memo.txt': 'remembered builds\n'.repeat(40) });
  const results = (uid: number, from: number) => world.broker.audit.slice(from).filter((l) => l.event === 'result' && l.method === 'AddImage' && (l.caller as { uid: number }).uid === uid);
  let seen = world.broker.audit.length;
  const [first] = await probeAs(world.users.carol!, [{ op: 'addImage', manifest: m }]);
  tt.ok(first!.ok, `carol adds it (${first!.message ?? ''})`);
  tt.notOk(results(world.users.carol!.uid, seen)[0]?.built, 'built by a build helper');
  seen = world.broker.audit.length;
  const [again] = await probeAs(world.users.alice!, [{ op: 'addImage', manifest: m }]);
  tt.equal(again!.id, first!.id, 'the same image for alice');
  tt.equal(results(world.users.alice!.uid, seen)[0]?.built, 'remembered', 'from what the first build found, no build helper');
  tt.same(again!.missing, [digestOf('remembered builds\n'.repeat(40))], 'and alice still has to prove the content: a remembered build proves nothing');
  await probeAs(world.users.alice!, [{ op: 'removeImage', id: first!.id }]);
  await probeAs(world.users.carol!, [{ op: 'removeImage', id: first!.id }]);
  await world.broker.waitFor((l) => l.event === 'store' && world.broker.audit.indexOf(l) >= seen, 10_000).catch(() => undefined);
  seen = world.broker.audit.length;
  const [anew, put, mounted] = await probeAs(world.users.carol!, [
    { op: 'addImage', manifest: m },
    { op: 'putObjects', records: [{ digest: digestOf('remembered builds\n'.repeat(40)), content: 'remembered builds\n'.repeat(40) }] },
    { op: 'mountImage', id: '$added' },
  ]);
  tt.equal(anew!.id, first!.id);
  tt.notOk(results(world.users.carol!.uid, seen)[0]?.built, 'its image gone, the manifest is built again');
  tt.ok(existsSync(join(world.broker.stateDir, 'images', first!.id!, 'image.erofs')), 'and its image written again');
  tt.ok(put!.ok && mounted!.ok, `uploaded and mounted (${mounted!.message ?? ''})`);
  await probeAs(world.users.carol!, [{ op: 'removeImage', id: first!.id }]);
});

t.test('SIGKILL in the middle of PutObjects leaves no wrong or partial object', async (tt) => {
  const big = 'x'.repeat(3 * 1024 * 1024);
  const digest = digestOf(big);
  const [added] = await probeAs(world.users.alice!, [{ op: 'addImage', manifest: { version: 1, entries: [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime }, { path: '/big.bin', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size: big.length, digest }] } }]);
  tt.same(added!.missing, [digest]);
  const upload = runAs(world.users.alice!, [process.execPath, probe, JSON.stringify([{ op: 'putObjects', records: [{ digest, repeat: ['x', big.length] }], partial: 1024 * 1024, holdMs: 3000 }])], { busAddress: world.bus.address });
  for (let k = 0; k < 100 && tmpFiles().length === 0; k++) await new Promise((r) => setTimeout(r, 50));
  tt.equal(tmpFiles().length, 1, 'the upload is under way in the store tmp dir');
  world.broker.process.kill('SIGKILL');
  await new Promise((r) => world.broker.process.once('exit', r));
  const r = await upload;
  tt.match(r.stdout, /"ok":false/, 'the uploader saw the call fail');
  tt.notOk(storeObjects().includes(digest), 'no object under the digest');
  const restarted = await startBroker(world.bus.address, undefined, world.broker);
  try {
    tt.same(tmpFiles(), [], 'the restarted broker dropped the partial upload');
    const [list] = await probeAs(world.users.alice!, [{ op: 'listImages' }]);
    tt.equal((list!.images as { missing: number }[])[0]?.missing, 1, 'the object is still missing after the restart');
    const [put, mount] = await probeAs(world.users.alice!, [{ op: 'putObjects', records: [{ digest, repeat: ['x', big.length] }] }, { op: 'mountImage', id: added!.id }]);
    tt.same(put, { ok: true, objects: 1, bytes: big.length }, 'the upload succeeds after the restart');
    tt.ok(mount!.ok, 'and the image mounts');
  } finally {
    await restarted.stop();
  }
});

