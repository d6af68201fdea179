// PutObjects records whose content is a passed fd (the size's top bit set;
// the fd travels on the AF_UNIX stream socket with the header): the file the
// caller opened proves possession and the broker's upload helper hashes it.
// Fds of every wrong kind, a lie about the size or the content, a record
// without its fd, an fd no record takes, and "by fd" over a pipe are each
// refused by name; nothing is stored (the object stays missing), the broker
// tree's fds return to their baseline, and others are served meanwhile.
import t from 'tap';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { createAdvWorld, type AdvWorld } from './helpers/adv-world.js';
import { runAs } from '../helpers/run-as.js';
import { pkgRoot } from '../helpers/paths.js';
import { FsVerityHasher } from '../../src/verity/fsverity.js';

let world: AdvWorld;
t.before(async () => {
  world = await createAdvWorld({
    users: { alice: {}, bob: {} },
    policy: {
      version: 1,
      methods: { AddImage: { users: ['*'] }, PutObjects: { users: ['*'] }, ListImages: { users: ['*'] }, RemoveImage: { users: ['*'] } },
      limits: { concurrentRequests: 8, requestsPerMinute: 100000 },
    },
  });
});
t.teardown(() => world?.teardown());

const content = Buffer.from('the content the image names\n'.repeat(300));
const digest = new FsVerityHasher().update(content).digest().toString('hex');
const mtime = { sec: 1, nsec: 0 };
const manifest = (tag: string) => ({
  version: 1,
  name: `put-fds-${createHash('sha256').update(tag).digest('hex').slice(0, 8)}`,
  entries: [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime }, { path: '/f', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size: content.length, digest }],
});

async function put(spec: Record<string, unknown>) {
  const r = await runAs(world.users.alice!, [process.execPath, join(pkgRoot, 'test', 'adversarial', 'helpers', 'put-fds.mjs'), JSON.stringify(spec)], { busAddress: world.bus.address, env: { MOUNTGATE_TEST_PKG: pkgRoot }, timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`put-fds failed (${r.code}): ${r.stderr.slice(0, 2000)}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { ok: boolean; name?: string; message?: string; objects?: number; missing?: number };
}

t.test('a regular file passed by fd proves the object: stored once, nothing missing', async (tt) => {
  const good = world.file('good.bin', content, world.users.alice);
  const r = await put({ manifest: manifest('good'), records: [{ digest, size: content.length, fd: { kind: 'file', path: good } }] });
  tt.ok(r.ok, `accepted (${r.message ?? ''})`);
  tt.equal(r.objects, 1);
  tt.equal(r.missing, 0, 'the image is complete');
});

t.test('a memfd holding the content proves the object (how layer content comes without a file)', async (tt) => {
  const r = await put({ manifest: manifest('memfd'), records: [{ digest, size: content.length, fd: { kind: 'memfd', data: content.toString() } }] });
  tt.ok(r.ok, `accepted (${r.message ?? ''})`);
  tt.equal(r.objects, 1);
  tt.equal(r.missing, 0, 'the image is complete');
});

const wrong = (w: AdvWorld) => w.file('wrong.bin', Buffer.alloc(content.length, 'x'), w.users.alice);
const short = (w: AdvWorld) => w.file('short.bin', content.subarray(1), w.users.alice);
const cases: { name: string; spec: (w: AdvWorld) => Record<string, unknown>; message: RegExp }[] = [
  { name: 'a directory fd', spec: (w) => ({ records: [{ digest, size: content.length, fd: { kind: 'dir', path: w.dirs.alice } }] }), message: /not a regular file/ },
  { name: 'the read end of a pipe', spec: () => ({ records: [{ digest, size: content.length, fd: { kind: 'pipe-read' } }] }), message: /not a regular file/ },
  { name: 'a socketpair end', spec: () => ({ records: [{ digest, size: content.length, fd: { kind: 'socketpair-stream' } }] }), message: /not a regular file/ },
  { name: '/dev/zero', spec: () => ({ records: [{ digest, size: content.length, fd: { kind: 'devzero' } }] }), message: /not a regular file/ },
  { name: 'an O_PATH fd of the right file', spec: (w) => ({ records: [{ digest, size: content.length, fd: { kind: 'opath-file', path: w.file('opath.bin', content, w.users.alice) } }] }), message: /not opened for reading/ },
  { name: 'a write-only fd of the right file', spec: (w) => ({ records: [{ digest, size: content.length, fd: { kind: 'file-wronly', path: w.file('wronly.bin', content, w.users.alice) } }] }), message: /not opened for reading/ },
  { name: 'a file of other content', spec: (w) => ({ records: [{ digest, size: content.length, fd: { kind: 'file', path: wrong(w) } }] }), message: /hashes to [0-9a-f]{64}; nothing of it was stored/ },
  { name: 'a file of another size', spec: (w) => ({ records: [{ digest, size: content.length, fd: { kind: 'file', path: short(w) } }] }), message: /passed file is \d+ bytes, its record says \d+/ },
  { name: 'a record "by fd" with no fd', spec: () => ({ records: [{ digest, size: content.length, fd: 'none' }] }), message: /no fd came with it/ },
  { name: 'a fd no record takes', spec: () => ({ records: [{ digest, size: content.length, bytes: content.toString(), extra: { kind: 'devzero' } }] }), message: /fd\(s\) came that no record took/ },
  { name: '"by fd" over a pipe', spec: () => ({ pipe: true, records: [{ digest, size: content.length, fd: 'none' }] }), message: /fds can only be passed on an AF_UNIX socket/ },
];

for (const c of cases) {
  t.test(`PutObjects refuses ${c.name}; nothing stored, fds back, others served`, async (tt) => {
    const before = world.snapshot();
    const r = await put({ manifest: manifest(c.name), ...c.spec(world) });
    tt.notOk(r.ok, 'refused');
    tt.match(r.name ?? '', /InvalidRequest/, `by name (${r.name})`);
    tt.match(r.message ?? '', c.message, 'with its reason');
    tt.equal(r.missing, 1, 'the object is still missing');
    await world.served(tt, world.users.bob!);
    await world.nothingLeft(tt, before, { stateMayChange: false });
  });
}
