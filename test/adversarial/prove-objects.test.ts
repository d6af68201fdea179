// ProveObjects, as unprivileged users: records that claim only a size, the
// content passed as an fd (or as bytes); the broker hashes each object,
// answers its digest and holds it for the caller's next AddImage, which then
// lists nothing missing. Held alike whether the store had the content (its
// file pinned: no byte written, kept even if its last image goes) or not (a
// copy given its name in the store, then pinned), so the answers tell
// nothing of what the store holds. Every bad record is refused by name,
// nothing is held after a refusal, the broker tree's fds come back, and
// others are served meanwhile.
import t from 'tap';
import { applyPolicy as applyTo } from '../helpers/broker.js';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createAdvWorld, type AdvWorld } from './helpers/adv-world.js';
import { runAs } from '../helpers/run-as.js';
import { cliPath, pkgRoot } from '../helpers/paths.js';
import type { TestUser } from '../helpers/users.js';
import { FsVerityHasher } from '../../src/verity/fsverity.js';
import { objectPath } from '../../src/composefs/format.js';

const quotaBytes = 1 << 20;
const maxEntries = 40;
const policy = (prove: string[]) => ({
  version: 1,
  methods: { AddImage: { users: ['*'] }, PutObjects: { users: ['*'] }, ProveObjects: { users: prove }, ListImages: { users: ['*'] }, RemoveImage: { users: ['*'] } },
  limits: { concurrentRequests: 8, requestsPerMinute: 100000 },
  images: { maxBytesPerUser: quotaBytes, maxEntriesPerImage: maxEntries },
});
let world: AdvWorld;
t.before(async () => {
  world = await createAdvWorld({ users: { alice: {}, bob: {}, carol: {} }, policy: policy(['*']) });
});

/** Applies a policy with SIGHUP and waits for the broker to say it did. */
const applyPolicy = (p: object) => applyTo(world.broker, p);
t.teardown(() => world?.teardown());

const verity = (b: Buffer) => new FsVerityHasher().update(b).digest().toString('hex');
const storeDir = () => join(world.broker.stateDir, 'store');
/** The user's files in the store's tmp directory (an upload's or a hold's copies are named "<uid>-<hex>.<n>"). */
const heldFiles = (user: TestUser) => readdirSync(join(storeDir(), 'tmp')).filter((f) => f.startsWith(`${user.uid}-`));

type Result = { ok: boolean; name?: string; message?: string; digests?: string[]; objects?: number; bytes?: number; imageId?: string; missing?: number; second?: { ok: boolean; name?: string; message?: string } };
async function prove(user: TestUser, spec: Record<string, unknown>): Promise<Result> {
  const r = await runAs(user, [process.execPath, join(pkgRoot, 'test', 'adversarial', 'helpers', 'prove-fds.mjs'), JSON.stringify(spec)], { busAddress: world.bus.address, env: { MOUNTGATE_TEST_PKG: pkgRoot }, timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`prove-fds failed (${r.code}): ${r.stderr.slice(0, 2000)}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Result;
}

t.test('the broker answers the digests of passed files and a memfd, and AddImage then lacks nothing', async (tt) => {
  const a = Buffer.from('first file of alice\n'.repeat(200));
  const b = Buffer.alloc(300_000, 'b');
  const m = Buffer.from('held from a memfd\n');
  const r = await prove(world.users.alice!, {
    image: 'proven',
    records: [
      { size: a.length, fd: { kind: 'file', path: world.file('a.bin', a.toString(), world.users.alice) } },
      { size: b.length, fd: { kind: 'file', path: world.file('b.bin', b.toString(), world.users.alice) } },
      { size: m.length, fd: { kind: 'memfd', data: m.toString() } },
      { size: 5, bytes: 'bytes' },
    ],
  });
  tt.ok(r.ok, `accepted (${r.message ?? ''})`);
  tt.same(r.digests, [verity(a), verity(b), verity(m), verity(Buffer.from('bytes'))], 'each digest is the content\'s, in record order');
  tt.equal(r.bytes, a.length + b.length + m.length + 5);
  tt.equal(r.missing, 0, 'AddImage found every object proven');
  tt.same(heldFiles(world.users.alice!), [], 'the image adopted every hold');
});

t.test('held alike whether the store has the content or not: its file pinned (nothing written), or a copy published and pinned; AddImage lacks nothing either way', async (tt) => {
  const stored = Buffer.from('alice keeps this in her image\n'.repeat(100));
  const fresh = Buffer.from('nobody has stored this yet\n'.repeat(100));
  const first = await prove(world.users.alice!, { image: 'alice-keeps', keep: true, records: [{ size: stored.length, fd: { kind: 'file', path: world.file('stored.bin', stored.toString(), world.users.alice) } }] });
  tt.ok(first.ok && first.missing === 0, `alice stored it (${first.message ?? ''})`);
  const objectFile = join(storeDir(), 'objects', objectPath(verity(stored)));
  const st = statSync(objectFile);

  const records = [
    { size: stored.length, fd: { kind: 'file', path: world.file('bob-stored.bin', stored.toString(), world.users.bob) } },
    { size: fresh.length, fd: { kind: 'file', path: world.file('bob-fresh.bin', fresh.toString(), world.users.bob) } },
  ];
  const held = await prove(world.users.bob!, { records });
  tt.ok(held.ok, `accepted (${held.message ?? ''})`);
  tt.same(held.digests, [verity(stored), verity(fresh)]);
  tt.same(heldFiles(world.users.bob!), [], 'nothing of bob\'s left in tmp/');
  tt.equal(statSync(join(storeDir(), 'objects', objectPath(verity(fresh)))).size, fresh.length, 'the content the store lacked is copied there, before AddImage');
  const after = statSync(objectFile);
  tt.same([after.ino, after.nlink, after.ctimeMs], [st.ino, st.nlink, st.ctimeMs], 'the stored content\'s file is untouched (no link, no write)');

  // Alice removes the only image that needs the stored content: its file stays, pinned by bob's hold.
  await world.probeAs(world.users.alice!, [{ op: 'removeImage', id: first.imageId }]);
  await new Promise((r) => setTimeout(r, 500));
  tt.equal(statSync(objectFile).ino, st.ino, 'the pinned file outlives its last image');

  // The AddImage that needs them (the same records proven again: a hold renewed is the same hold).
  const added = await prove(world.users.bob!, { image: 'bob-both', keep: true, records });
  tt.equal(added.missing, 0, 'nothing missing for bob, the stored content and the fresh one alike');
  tt.equal(statSync(objectFile).ino, st.ino, 'the store\'s file was not rewritten');
  tt.equal(statSync(join(storeDir(), 'objects', objectPath(verity(fresh)))).size, fresh.length, 'the fresh content is in the store');
  const list = await world.probeAs(world.users.bob!, [{ op: 'listImages' }]);
  tt.equal((list[0]!.images as { id: string; missing: number }[]).find((i) => i.id === added.imageId)?.missing, 0, 'ListImages agrees');
  await world.probeAs(world.users.bob!, [{ op: 'removeImage', id: added.imageId }]);
});

t.test('a pin let go frees a file no image needs', async (tt) => {
  const c = Buffer.from('pinned, then let go\n'.repeat(50));
  const first = await prove(world.users.alice!, { image: 'let-go', keep: true, records: [{ size: c.length, bytes: c.toString() }] });
  const objectFile = join(storeDir(), 'objects', objectPath(verity(c)));
  tt.ok(statSync(objectFile).isFile());
  // Bob proves it by an fd: the store has it, so it is pinned (bytes in the stream are always copied).
  const held = await prove(world.users.bob!, { records: [{ size: c.length, fd: { kind: 'memfd', data: c.toString() } }] });
  tt.ok(held.ok);
  tt.same(heldFiles(world.users.bob!), [], 'no copy: a pin');
  await world.probeAs(world.users.alice!, [{ op: 'removeImage', id: first.imageId }]);
  await new Promise((r) => setTimeout(r, 500));
  tt.ok(statSync(objectFile).isFile(), 'kept while bob holds it');
  // Bob's hold ends when his image adopts it and he removes that image: then nothing needs the file.
  const added = await prove(world.users.bob!, { image: 'let-go-bob', keep: true, records: [{ size: c.length, fd: { kind: 'memfd', data: c.toString() } }] });
  tt.equal(added.missing, 0);
  await world.probeAs(world.users.bob!, [{ op: 'removeImage', id: added.imageId }]);
  for (let i = 0; i < 50 && existsSync(objectFile); i++) await new Promise((r) => setTimeout(r, 100));
  tt.notOk(existsSync(objectFile), 'deleted once no image and no hold needs it');
});

const content = Buffer.from('content for the refusals\n'.repeat(100));
const cases: { name: string; spec: (w: AdvWorld) => Record<string, unknown>; reason: RegExp; message: RegExp }[] = [
  { name: 'a record that claims a digest', spec: (w) => ({ records: [{ digest: verity(content), size: content.length, fd: { kind: 'file', path: w.file('claimed.bin', content.toString(), w.users.carol) } }] }), reason: /InvalidRequest/, message: /claims a digest; ProveObjects records carry 32 zero bytes/ },
  { name: 'a record of 0 bytes', spec: () => ({ records: [{ size: 0, bytes: '' }] }), reason: /InvalidRequest/, message: /is of 0 bytes; an empty file is no object/ },
  { name: 'a directory fd', spec: (w) => ({ records: [{ size: content.length, fd: { kind: 'dir', path: w.dirs.carol } }] }), reason: /InvalidRequest/, message: /not a regular file/ },
  { name: 'a write-only fd', spec: (w) => ({ records: [{ size: content.length, fd: { kind: 'file-wronly', path: w.file('wronly-p.bin', content.toString(), w.users.carol) } }] }), reason: /InvalidRequest/, message: /not opened for reading/ },
  { name: 'a size that is not the file\'s', spec: (w) => ({ records: [{ size: content.length + 1, fd: { kind: 'file', path: w.file('lie.bin', content.toString(), w.users.carol) } }] }), reason: /InvalidRequest/, message: /passed file is \d+ bytes, its record says \d+/ },
  { name: 'a record "by fd" with no fd', spec: () => ({ records: [{ size: content.length, fd: 'none' }] }), reason: /InvalidRequest/, message: /record 1 takes its content from a passed fd, but no fd came with it/ },
  { name: '"by fd" over a pipe', spec: () => ({ pipe: true, records: [{ size: content.length, fd: 'none' }] }), reason: /InvalidRequest/, message: /fds can only be passed on an AF_UNIX socket/ },
  { name: 'bytes past the quota', spec: () => ({ records: [{ size: 1000, bytes: 'x'.repeat(1000) }, { size: quotaBytes, fd: { kind: 'memfd', size: quotaBytes, data: '' } }] }), reason: /LimitExceeded/, message: /more than the \d+ byte\(s\) your quota leaves/ },
  { name: 'more objects than the policy lets it hold', spec: () => ({ records: Array.from({ length: maxEntries + 1 }, (_, k) => ({ size: 8, bytes: `obj${String(k).padStart(5, '0')}` })) }), reason: /LimitExceeded/, message: new RegExp(`more than ${maxEntries} record\\(s\\)`) },
  { name: 'a truncated stream', spec: () => ({ records: [{ size: 100, bytes: 'only a few' }] }), reason: /InvalidRequest/, message: /the stream ended 90 bytes before the end of an object/ },
];

for (const c of cases) {
  t.test(`ProveObjects refuses ${c.name}; nothing held, fds back, others served`, async (tt) => {
    const before = world.snapshot();
    // A good record first: what a refused call held goes with it.
    const good = { size: 11, bytes: 'held first\n' };
    const spec = c.spec(world);
    const r = await prove(world.users.carol!, { ...spec, records: spec.pipe ? spec.records : [good, ...(spec.records as unknown[])] });
    tt.notOk(r.ok, 'refused');
    tt.match(r.name ?? '', c.reason, `by name (${r.name})`);
    tt.match(r.message ?? '', c.message, `with its reason (${r.message})`);
    tt.same(heldFiles(world.users.carol!), [], 'nothing is held for carol');
    await world.served(tt, world.users.bob!);
    await world.nothingLeft(tt, before, { stateMayChange: false });
  });
}

t.test('one ProveObjects of a user\'s at a time: a second one meanwhile is refused as a limit, the first goes on', async (tt) => {
  const r = await prove(world.users.carol!, { second: true, records: [{ size: 6, bytes: 'first\n' }] });
  tt.match(r.second?.name ?? '', /LimitExceeded/, `the second: ${r.second?.message}`);
  tt.match(r.second?.message ?? '', /a ProveObjects of yours is under way/);
  tt.ok(r.ok, `the first is answered (${r.message ?? ''})`);
  tt.same(r.digests, [verity(Buffer.from('first\n'))]);
  await world.served(tt, world.users.bob!);
});

t.test('a policy rule for ProveObjects applies: a user it does not name is denied', async (tt) => {
  await applyPolicy(policy([world.users.alice!.name]));
  try {
    const r = await prove(world.users.bob!, { records: [{ size: 4, bytes: 'deny' }] });
    tt.notOk(r.ok);
    tt.match(r.name ?? '', /PolicyDenied/, `by name (${r.message})`);
    tt.same(heldFiles(world.users.bob!), []);
  } finally {
    await applyPolicy(policy(['*']));
  }
});

t.test('`image add DIR` has the broker hash the files: a second user importing the same tree sends no byte and rewrites no object', async (tt) => {
  const alice = world.users.alice!;
  const bob = world.users.bob!;
  const tree = (user: TestUser) => {
    const dir = join(world.dirs[user === alice ? 'alice' : 'bob']!, 'tree');
    mkdirSync(join(dir, 'etc'), { recursive: true });
    writeFileSync(join(dir, 'etc', 'motd'), 'hello from a tree\n');
    writeFileSync(join(dir, 'big'), Buffer.alloc(3 << 20, 'z').subarray(0, 300_000));
    writeFileSync(join(dir, 'copy-of-motd'), 'hello from a tree\n');
    execFileSync('chown', ['-R', `${user.uid}:${user.gid}`, dir]);
    // The same times in both trees: the same image.
    for (const p of ['etc/motd', 'big', 'copy-of-motd', 'etc', '.']) utimesSync(join(dir, p), 1_700_000_000, 1_700_000_000);
    return dir;
  };
  const add = async (user: TestUser, dir: string) => {
    const r = await runAs(user, [process.execPath, cliPath, 'image', 'add', dir, '--name', 'shared-tree', '--json', '--no-digest-cache'], { busAddress: world.bus.address, timeoutMs: 120_000 });
    tt.equal(r.code, 0, `image add as ${user.name} exits 0${r.code ? `: ${r.stderr}` : ''}`);
    return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { id: string; uploaded: { objects: number; bytes: number } };
  };
  const calls = (user: TestUser, method: string, from: number) => world.broker.audit.slice(from).filter((l) => l.event === 'decision' && l.method === method && (l.caller as { uid: number }).uid === user.uid);
  const seen = world.broker.audit.length;
  const first = await add(alice, tree(alice));
  tt.equal(first.uploaded.objects, 0, 'a first import too: what ProveObjects copied, AddImage adopted (no PutObjects)');
  tt.equal(calls(alice, 'ProveObjects', seen).length, 1, 'alice\'s client called ProveObjects once');
  const objects = join(storeDir(), 'objects');
  const inodes = () => Object.fromEntries(readdirSync(objects).flatMap((p) => readdirSync(join(objects, p)).map((r) => [p + r, statSync(join(objects, p, r)).ino])));
  const before = inodes();
  const treeDigests = [verity(Buffer.from('hello from a tree\n')), verity(Buffer.alloc(3 << 20, 'z').subarray(0, 300_000))];
  tt.ok(treeDigests.every((d) => d in before), 'the tree\'s two contents are in the store (the two equal files are one)');

  const second = await add(bob, tree(bob));
  tt.equal(second.id, first.id, 'the same image');
  tt.equal(second.uploaded.objects, 0, 'bob sent no object');
  tt.equal(calls(bob, 'PutObjects', seen).length, 0, 'no PutObjects of bob\'s');
  tt.same(inodes(), before, 'no object file was written again');
  tt.same(heldFiles(bob), [], 'nothing left held');
  const list = await world.probeAs(bob, [{ op: 'listImages' }]);
  tt.equal((list[0]!.images as { id: string; missing: number }[]).find((i) => i.id === second.id)?.missing, 0, 'nothing missing for bob');
  await world.probeAs(bob, [{ op: 'removeImage', id: second.id }]);
  await world.probeAs(alice, [{ op: 'removeImage', id: first.id }]);
});

t.test('`image add LAYER.tar` proves the contents as it reads them: a second user sends nothing after AddImage and rewrites no object', async (tt) => {
  const alice = world.users.alice!;
  const bob = world.users.bob!;
  const src = join(world.scratch, 'layer-src');
  mkdirSync(join(src, 'etc'), { recursive: true });
  writeFileSync(join(src, 'etc', 'os-release'), 'NAME=layer\n');
  writeFileSync(join(src, 'blob'), Buffer.alloc(200_000, 'q'));
  const tarball = join(world.scratch, 'layer.tar');
  execFileSync('tar', ['--numeric-owner', '--mtime=@1700000000', '-C', src, '-cf', tarball, '.']);
  execFileSync('chmod', ['a+r', tarball]);
  const add = async (user: TestUser) => {
    const r = await runAs(user, [process.execPath, cliPath, 'image', 'add', tarball, '--name', 'layer', '--json', '--no-digest-cache'], { busAddress: world.bus.address, env: { XDG_DATA_HOME: join(world.dirs[user === alice ? 'alice' : 'bob']!, 'data') }, timeoutMs: 120_000 });
    tt.equal(r.code, 0, `image add as ${user.name} exits 0${r.code ? `: ${r.stderr}` : ''}`);
    return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { id: string; uploaded: { objects: number }; proven: { objects: number } };
  };
  const first = await add(alice);
  tt.match(first, { uploaded: { objects: 0 }, proven: { objects: 2 } }, 'alice: both contents proven as read, nothing uploaded after');
  const objects = join(storeDir(), 'objects');
  const inodes = () => Object.fromEntries(readdirSync(objects).flatMap((p) => readdirSync(join(objects, p)).map((r) => [p + r, statSync(join(objects, p, r)).ino])));
  const before = inodes();
  const seen = world.broker.audit.length;
  const second = await add(bob);
  tt.equal(second.id, first.id, 'the same image');
  tt.match(second, { uploaded: { objects: 0 }, proven: { objects: 2 } }, 'bob: proven, nothing uploaded');
  tt.equal(world.broker.audit.slice(seen).filter((l) => l.event === 'decision' && l.method === 'PutObjects').length, 0, 'no PutObjects');
  tt.same(inodes(), before, 'no object file written again');
  tt.same(heldFiles(bob), [], 'nothing left held');
  await world.probeAs(bob, [{ op: 'removeImage', id: second.id }]);
  await world.probeAs(alice, [{ op: 'removeImage', id: first.id }]);
});

t.test('an archive that breaks off while its contents are proven: the import fails, nothing is registered or held', async (tt) => {
  const carol = world.users.carol!;
  const src = join(world.scratch, 'broken-src');
  mkdirSync(src, { recursive: true });
  for (let k = 0; k < 5; k++) writeFileSync(join(src, `f${k}`), Buffer.alloc(30_000, 65 + k));
  const whole = join(world.scratch, 'whole.tar');
  execFileSync('tar', ['-C', src, '-cf', whole, '.']);
  const cut = join(world.scratch, 'cut.tar');
  // Inside the fourth file's content: three contents were proven before it.
  writeFileSync(cut, readFileSync(whole).subarray(0, 512 * 2 + (512 + 30_208) * 3 + 1000));
  execFileSync('chmod', ['a+r', cut]);
  const seen = world.broker.audit.length;
  // Carol holds what an earlier test of hers proved: only this import's copies must not stay.
  const heldBefore = heldFiles(carol);
  const r = await runAs(carol, [process.execPath, cliPath, 'image', 'add', cut, '--name', 'cut', '--no-digest-cache'], { busAddress: world.bus.address, env: { XDG_DATA_HOME: join(world.dirs.carol!, 'data') }, timeoutMs: 120_000 });
  tt.not(r.code, 0, 'the import fails');
  tt.match(r.stderr, /truncated|ended|unexpected end/i, `saying the archive is cut short (${r.stderr.trim().split('\n').at(-1)})`);
  const refused = world.broker.audit.slice(seen).filter((l) => l.event === 'decision' && l.method === 'ProveObjects' && l.allowed === false);
  tt.match(refused[0]?.message, /the stream ended 1 bytes before the end of an object/, 'the client cut its ProveObjects inside a record, so the broker refused it and held nothing');
  tt.same(heldFiles(carol), heldBefore, 'no copy of this import left in tmp/');
  const list = await world.probeAs(carol, [{ op: 'listImages' }]);
  tt.same(list[0]!.images, [], 'no image registered');
  await world.served(tt, world.users.bob!);
});

t.test('a directory walk that fails after some of its files were proven: the import fails naming what it could not read, nothing is registered or held', async (tt) => {
  const carol = world.users.carol!;
  const dir = join(world.dirs.carol!, 'half-readable');
  mkdirSync(join(dir, 'a'), { recursive: true });
  // Passed to the broker as the walk meets them, before it reaches z/.
  for (let k = 0; k < 5; k++) writeFileSync(join(dir, 'a', `f${k}`), Buffer.alloc(20_000, 97 + k));
  mkdirSync(join(dir, 'z'));
  execFileSync('chown', ['-R', `${carol.uid}:${carol.gid}`, dir]);
  execFileSync('chmod', ['000', join(dir, 'z')]);
  const seen = world.broker.audit.length;
  const heldBefore = heldFiles(carol);
  const r = await runAs(carol, [process.execPath, cliPath, 'image', 'add', dir, '--name', 'half', '--no-digest-cache'], { busAddress: world.bus.address, timeoutMs: 120_000 });
  execFileSync('chmod', ['755', join(dir, 'z')]);
  tt.not(r.code, 0, 'the import fails');
  tt.match(r.stderr, /z/, `naming the directory it could not read (${r.stderr.trim().split('\n').at(-1)})`);
  tt.match(r.stderr, /permission denied|EACCES/i, 'and why');
  const calls = world.broker.audit.slice(seen).filter((l) => l.event === 'decision' && l.method === 'ProveObjects');
  tt.ok(calls.length > 0, 'the files were being proven during the walk');
  tt.match(calls.find((l) => l.allowed === false)?.message, /the stream ended 1 bytes before the end of an object/, 'the client cut its ProveObjects inside a record, so the broker refused it and held nothing');
  tt.same(heldFiles(carol), heldBefore, 'no copy of this import left in tmp/');
  const list = await world.probeAs(carol, [{ op: 'listImages' }]);
  tt.same((list[0]!.images as { name?: string }[]).filter((i) => i.name === 'half'), [], 'no image registered');
  await world.served(tt, world.users.bob!);
});

t.test('`image add DIR` of files that fill the stream\'s byte window (three of 25 MiB, past its 64 MiB): each acknowledged as soon as it is hashed, so nothing stalls', async (tt) => {
  const alice = world.users.alice!;
  await applyPolicy({ ...policy(['*']), images: { maxBytesPerUser: 512 << 20, maxEntriesPerImage: maxEntries } });
  tt.teardown(() => applyPolicy(policy(['*'])));
  const dir = join(world.dirs.alice!, 'big-files');
  mkdirSync(dir, { recursive: true });
  for (let k = 0; k < 3; k++) writeFileSync(join(dir, `f${k}`), Buffer.alloc(25 << 20, 48 + k));
  execFileSync('chown', ['-R', `${alice.uid}:${alice.gid}`, dir]);
  const r = await runAs(alice, [process.execPath, cliPath, 'image', 'add', dir, '--name', 'big-files', '--json', '--no-digest-cache'], { busAddress: world.bus.address, timeoutMs: 120_000 });
  tt.equal(r.code, 0, `image add exits 0${r.code ? `: ${r.stderr}` : ''}`);
  const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { id: string; uploaded: { objects: number }; proven: { objects: number; bytes: number } };
  tt.match(out, { uploaded: { objects: 0 }, proven: { objects: 3, bytes: 75 << 20 } }, 'all three proven, nothing uploaded after');
  await world.probeAs(alice, [{ op: 'removeImage', id: out.id }]);
});
