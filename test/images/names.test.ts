// Several names per image of a user at the broker, through the real bus:
// AddImage with a name adds it (the image keeps its others), a name given to
// another image moves, ListImages gives every name, and RemoveImage by name
// drops only that name until the last, which takes the registration with it.
// A bad or foreign name is refused, and the broker keeps serving others.
import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { FsVerityHasher } from '../../src/verity/fsverity.js';
import { runAs } from '../helpers/run-as.js';
import { pkgRoot } from '../helpers/paths.js';
import { createWorld, type World } from '../helpers/world.js';
import type { TestUser } from '../helpers/users.js';

const probe = join(pkgRoot, 'test', 'helpers', 'probe-client.mjs');
const all = { users: ['*'] };
let world: World;

t.before(async () => {
  world = await createWorld({
    users: { alice: {}, bob: {} },
    policy: { version: 1, methods: { AddImage: all, PutObjects: all, ListImages: all, RemoveImage: all, Explain: all }, limits: { concurrentRequests: 8, requestsPerMinute: 100000 } },
  });
});
t.teardown(() => world?.teardown());

type Reply = { ok: boolean; name?: string; message?: string; id?: string; images?: Listed[]; verdict?: { allowed: boolean; error?: { name: string; message: string } } };
type Listed = { id: string; name?: string; names: string[] };

async function probeAs(user: TestUser, ops: unknown[]): Promise<Reply[]> {
  const r = await runAs(user, [process.execPath, probe, JSON.stringify(ops)], { busAddress: world.bus.address });
  if (r.code !== 0) throw new Error(`probe failed (${r.code}): ${r.stderr}`);
  return r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Reply);
}

const mtime = { sec: 1700000000, nsec: 5 };
const digestOf = (content: string) => new FsVerityHasher().update(Buffer.from(content)).digest().toString('hex');
function manifest(name: string, content: string): object {
  return {
    version: 1,
    name,
    entries: [
      { path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime },
      { path: '/f', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size: Buffer.byteLength(content), digest: digestOf(content) },
    ],
  };
}
const list = async (user: TestUser) => {
  const [r] = await probeAs(user, [{ op: 'listImages' }]);
  return r!.images!.map((i) => ({ id: i.id, name: i.name, names: i.names }));
};

t.test('a second name for the same image keeps the first; names move as tags; removing by name drops only the name until the last', async (tt) => {
  const alice = world.users.alice!;
  const [one, two] = await probeAs(alice, [{ op: 'addImage', manifest: manifest('one-layer', 'same\n') }, { op: 'addImage', manifest: manifest('two-layer', 'same\n') }]);
  tt.equal(two!.id, one!.id, 'the same tree: one image');
  const a = one!.id!;
  tt.same(await list(alice), [{ id: a, name: 'two-layer', names: ['one-layer', 'two-layer'] }], 'both names listed; name is the last given (what older clients read)');

  const [other] = await probeAs(alice, [{ op: 'addImage', manifest: manifest('other', 'other\n') }]);
  const b = other!.id!;
  await probeAs(alice, [{ op: 'addImage', manifest: manifest('two-layer', 'other\n') }]);
  tt.same(await list(alice), [{ id: a, name: 'one-layer', names: ['one-layer'] }, { id: b, name: 'two-layer', names: ['other', 'two-layer'] }].sort((x, y) => x.id.localeCompare(y.id)), 'given to another image, the name moved');

  const [byName] = await probeAs(alice, [{ op: 'removeImage', request: { name: 'other' } }]);
  tt.ok(byName!.ok, `RemoveImage {"name": "other"} answered (${byName!.message ?? ''})`);
  tt.same((await list(alice)).find((i) => i.id === b)?.names, ['two-layer'], 'only the name went: the image stays with its other name');
  const imageFile = (id: string) => existsSync(join(world.broker.stateDir, 'images', id, 'image.erofs'));
  tt.ok(imageFile(b), 'and its file');
  const audited = world.broker.audit.filter((l) => l.event === 'result' && l.method === 'RemoveImage');
  tt.match(audited[audited.length - 1], { image: b, name: 'other', unregistered: false }, 'the audit says which name of which image, and that the image stayed');
  const [last] = await probeAs(alice, [{ op: 'removeImage', request: { name: 'two-layer' } }]);
  tt.ok(last!.ok, 'its last name removed');
  tt.same((await list(alice)).map((i) => i.id), [a], 'with its last name the registration went');
  tt.notOk(imageFile(b), 'and, no one else owning it, the image left the store');
  tt.match(world.broker.audit.filter((l) => l.event === 'result' && l.method === 'RemoveImage').pop(), { image: b, name: 'two-layer', unregistered: true }, 'audited as unregistering');
  const [again] = await probeAs(alice, [{ op: 'removeImage', request: { name: 'two-layer' } }]);
  tt.equal(again!.name, 'org.mountgate.Error.NotFound', 'the name names nothing now');

  const [byId] = await probeAs(alice, [{ op: 'removeImage', request: { imageId: a } }]);
  tt.ok(byId!.ok, 'RemoveImage {"imageId"} answered');
  tt.same(await list(alice), [], 'by id the image goes whatever names it has');
});

t.test('RemoveImage refuses a bad or foreign name, as an unprivileged user, and the broker keeps serving', async (tt) => {
  const alice = world.users.alice!;
  const bob = world.users.bob!;
  const [added] = await probeAs(alice, [{ op: 'addImage', manifest: manifest('alices', 'alice\n') }]);
  const id = added!.id!;
  const replies = await probeAs(bob, [
    { op: 'removeImage', request: { name: 'alices' } },
    { op: 'removeImage', request: { name: '' } },
    { op: 'removeImage', request: { name: 'x'.repeat(256) } },
    { op: 'removeImage', request: { imageId: id, name: 'alices' } },
    { op: 'removeImage', request: { name: 'alices', junk: 1 } },
    { op: 'removeImage', request: { imageId: 'not-an-id' } },
    { op: 'removeImage', requestText: '{"name": ' },
    { op: 'removeImage', request: { imageId: id } },
    { op: 'explain', method: 'RemoveImage', request: { name: 'alices' } },
    { op: 'listImages' },
  ]);
  tt.equal(replies[0]!.name, 'org.mountgate.Error.NotFound', "alice's name, asked by bob: not found");
  tt.match(replies[0]!.message, /you have no image named "alices"; see ListImages/, 'the reason names the name');
  for (const [k, why] of [[1, 'an empty name'], [2, 'a name longer than 255'], [3, 'both an id and a name'], [4, 'an unknown field'], [5, 'an id that is no id'], [6, 'no JSON']] as const) {
    tt.equal(replies[k]!.name, 'org.mountgate.Error.InvalidRequest', `${why}: InvalidRequest`);
    tt.match(replies[k]!.message, /request_json/, `${why}: the reason names the argument (${replies[k]!.message})`);
  }
  tt.equal(replies[7]!.name, 'org.mountgate.Error.NotFound', "alice's image by id, asked by bob: not found");
  tt.same([replies[8]!.verdict?.allowed, replies[8]!.verdict?.error?.name], [false, 'org.mountgate.Error.NotFound'], 'Explain says the same');
  tt.ok(replies[9]!.ok, 'bob is still served');
  tt.same((await list(alice)).map((i) => i.names), [['alices']], "alice's image and name are untouched");
  const [mine] = await probeAs(alice, [{ op: 'removeImage', request: { name: 'alices' } }]);
  tt.ok(mine!.ok, 'alice removes it by its name');
  tt.same(await list(alice), [], 'gone');
});
