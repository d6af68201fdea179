// Finding 5 and the fd-kind family: fds of every wrong kind to every method
// that takes fds (BindIdmapped, Explain's fds, AddImage, PutObjects). Each is
// refused by name with its reason, nothing is stored or mounted, and the
// broker tree's fd count is back to its baseline after every kind (one leaked
// fd per call was the finding, with SOCK_DGRAM streams).
import t from 'tap';
import { join } from 'node:path';
import { createAdvWorld, errorName, type AdvWorld, type Reply } from './helpers/adv-world.js';

let world: AdvWorld;
t.before(async () => {
  world = await createAdvWorld({
    users: { alice: {}, bob: {} },
    policy: {
      version: 1,
      methods: { BindIdmapped: { users: ['*'] }, Explain: { users: ['*'], requireSubordinateIds: false }, AddImage: { users: ['*'], requireSubordinateIds: false }, PutObjects: { users: ['*'], requireSubordinateIds: false }, ListImages: { users: ['*'], requireSubordinateIds: false } },
      limits: { concurrentRequests: 8, requestsPerMinute: 100000 },
    },
  });
  await world.probeAs(world.users.alice!, [{ op: 'bind', source: { kind: 'dir', path: world.dirs.alice } }]);
});
t.teardown(() => world?.teardown());

type Expect = { name: string; reason: RegExp } | 'ok' | 'skip' | 'refused';
const notDir: Expect = { name: 'InvalidRequest', reason: /not a directory/ };
const notSealed: Expect = { name: 'InvalidRequest', reason: /sealed memfd/ };
const notStream: Expect = { name: 'InvalidRequest', reason: /pipe or a (connected )?(AF_UNIX )?stream socket/ };
const otherNs: Expect = { name: 'InvalidRequest', reason: /mount namespace/ };
const validManifest = JSON.stringify({ version: 1, entries: [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: { sec: 1, nsec: 0 } }] });

interface Kind {
  name: string;
  source: (w: AdvWorld) => Record<string, unknown>;
  bind: Expect;
  add: Expect;
  /** 'skip': a kind PutObjects accepts (a pipe read end, a connected stream socket) would wait for records. */
  put: Expect;
  prep?: unknown[];
  wrap?: string[];
}

const kinds: Kind[] = [
  { name: 'an unconnected AF_UNIX stream socket', source: () => ({ kind: 'socket-stream' }), bind: notDir, add: notSealed, put: notStream },
  { name: 'an unconnected AF_UNIX datagram socket', source: () => ({ kind: 'socket-dgram' }), bind: notDir, add: notSealed, put: notStream },
  { name: 'an unconnected AF_UNIX seqpacket socket', source: () => ({ kind: 'socket-seqpacket' }), bind: notDir, add: notSealed, put: notStream },
  { name: 'a stream socketpair end', source: () => ({ kind: 'socketpair-stream' }), bind: notDir, add: notSealed, put: 'skip' },
  { name: 'a datagram socketpair end', source: () => ({ kind: 'socketpair-dgram' }), bind: notDir, add: notSealed, put: notStream },
  { name: 'a seqpacket socketpair end', source: () => ({ kind: 'socketpair-seqpacket' }), bind: notDir, add: notSealed, put: notStream },
  { name: 'a listening socket', source: () => ({ kind: 'socket-listening' }), bind: notDir, add: notSealed, put: notStream },
  { name: 'the write end of a pipe', source: () => ({ kind: 'pipe-write' }), bind: notDir, add: notSealed, put: notStream },
  { name: 'the read end of a pipe', source: () => ({ kind: 'pipe-read' }), bind: notDir, add: notSealed, put: 'skip' },
  { name: 'a FIFO never written', source: (w) => ({ kind: 'fifo-unwritten', path: join(w.dirs.alice!, 'never-written.fifo') }), bind: notDir, add: notSealed, put: 'skip' },
  { name: '/dev/zero', source: () => ({ kind: 'devzero' }), bind: notDir, add: notSealed, put: notStream },
  { name: 'an O_PATH fd of a directory the caller owns', source: (w) => ({ kind: 'opath-dir', path: w.dirs.alice }), bind: 'ok', add: notSealed, put: notStream },
  { name: 'an O_PATH fd of a file', source: (w) => ({ kind: 'opath-file', path: w.file('opath-target.txt', 'x', w.users.alice) }), bind: notDir, add: notSealed, put: notStream },
  { name: 'an unsealed memfd holding a valid manifest', source: () => ({ kind: 'memfd', data: validManifest }), bind: notDir, add: notSealed, put: notStream },
  { name: 'a memfd sealed against writes only', source: () => ({ kind: 'memfd-write-sealed-only', data: validManifest }), bind: notDir, add: notSealed, put: notStream },
  { name: 'a regular file holding a valid manifest', source: () => ({ kind: 'file-data', data: validManifest }), bind: notDir, add: notSealed, put: notStream },
  {
    name: 'a directory fd opened inside another mount namespace',
    source: (w) => ({ kind: 'dir', path: w.dirs.alice }),
    wrap: ['unshare', '-Urm', '--propagation', 'private'],
    bind: otherNs,
    add: notSealed,
    put: notStream,
  },
  {
    name: 'a mount fd the broker itself returned earlier',
    prep: [{ op: 'bind', source: { kind: 'dir', path: '@alice' }, keepFds: true }],
    source: () => ({ kind: 'kept', index: 0 }),
    bind: 'refused',
    add: notSealed,
    put: notStream,
  },
];

function check(tt: Tap.Test, what: string, r: Reply | undefined, expect: Expect) {
  if (expect === 'skip') return;
  // Explain answers with a verdict; its refusal is the verdict's error.
  const verdict = r?.verdict as { allowed: boolean; error?: { name: string; message: string } } | undefined;
  const ok = verdict ? verdict.allowed : r?.ok;
  const name = verdict ? verdict.error?.name : r?.name;
  const message = verdict ? verdict.error?.message : r?.message;
  if (expect === 'ok') {
    tt.ok(ok, `${what}: granted (${name ?? ''} ${message ?? ''})`);
    return;
  }
  tt.notOk(ok, `${what}: refused`);
  if (expect === 'refused') {
    tt.match(name ?? '', /^org\.mountgate\.Error\.(InvalidRequest|PolicyDenied|NotOwner)$/, `${what}: refused by name (${name}: ${message})`);
    return;
  }
  tt.equal(name, errorName(expect.name), `${what}: ${expect.name} (${name}: ${message})`);
  tt.match(message ?? '', expect.reason, `${what}: the message says why`);
}

for (const k of kinds) {
  t.test(`${k.name}, to every fd-taking method`, async (tt) => {
    const alice = world.users.alice!;
    const src = k.source(world);
    const prep = JSON.parse(JSON.stringify(k.prep ?? []).replace(/"@alice"/g, JSON.stringify(world.dirs.alice)));
    // A datagram socketpair as the PutObjects stream, a few times: one leaked fd per call was the finding.
    const repeat = k.put === notStream && /dgram/.test(String(src.kind)) ? 5 : 1;
    const before = world.snapshot();
    const ops = [
      ...prep,
      { op: 'bind', source: src },
      { op: 'explain', method: 'BindIdmapped', request: {}, source: src },
      { op: 'addImage', fd: src },
      ...Array.from({ length: k.put === 'skip' ? 0 : repeat }, () => ({ op: 'putObjects', fd: src })),
    ];
    // A call the broker never answers (it waits on the fd) must not hold the file for a minute.
    const replies = (await world.probeAs(alice, ops, { wrap: k.wrap, timeoutMs: 15_000 }).catch((err: Error) => {
      tt.fail(`every call is answered within 15 s (${err.message.slice(0, 200)})`);
      return [] as Reply[];
    })).slice(prep.length);
    const [bind, explain, add, ...puts] = replies;
    check(tt, 'BindIdmapped', bind, k.bind);
    check(tt, 'Explain(BindIdmapped)', explain, k.bind);
    check(tt, 'AddImage', add, k.add);
    puts.forEach((p, n) => check(tt, `PutObjects #${n + 1}`, p, k.put));
    for (const r of replies) tt.ok((r.ms ?? 0) < 2000, `answered at once (${r.ms} ms)`);
    await world.nothingLeft(tt, before);
    await world.served(tt, world.users.bob!);
  });
}

t.test('a burst of datagram socketpairs as PutObjects streams leaks nothing', async (tt) => {
  const before = world.snapshot();
  const [r] = await world.probeAs(world.users.alice!, [{ op: 'parallel', ops: Array.from({ length: 40 }, () => ({ op: 'putObjects', fd: { kind: 'socketpair-dgram' } })) }]);
  const results = (r!.results as Reply[]) ?? [];
  tt.equal(results.length, 40);
  tt.ok(results.every((x) => !x.ok), 'every call refused');
  await world.nothingLeft(tt, before);
  await world.served(tt, world.users.bob!);
});
