// What the front takes from a build helper (readResult in
// src/broker/build-helpers.ts): the facts as short JSON, the objects as
// packed records, the image bytes, each in a sealed memfd read off the event
// loop. An honest result reads back as the build made it, its device nodes
// named a few and counted; a result no helper sends (another number of fds,
// a file that is not a sealed memfd, an image id that is no digest, counts
// that do not add up, records out of order) is refused, and nothing of it
// is used.
import t from 'tap';
import { closeSync, openSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { readResult } from '../../src/broker/build-helpers.js';
import { buildImage, type BuildResult } from '../../src/broker/image-builder.js';
import { memfdCreate, sealedMemfd } from '../../src/sys/syscalls.js';
import { objectRecordBytes } from '../../src/store/object-list.js';

const mtime = { sec: 1700000000, nsec: 0 };
const digest = (k: number) => createHash('sha256').update(`object ${k}`).digest('hex');
const limits = { maxEntries: 1000, maxBytes: 2 ** 20 };
const entries = [
  { path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime },
  ...Array.from({ length: 5 }, (_, k) => ({ path: `/d${k}`, type: 'chardev', mode: 0o600, uid: 0, gid: 0, mtime, rdev: 259 })),
  // Ten files of six objects: a shared content is one object.
  ...Array.from({ length: 10 }, (_, k) => ({ path: `/f${k}`, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size: 100 + (k % 6), digest: digest(k % 6) })),
];
const built = buildImage(Buffer.from(JSON.stringify({ version: 1, name: 'small', entries })), limits);
const { image, objects, ...rest } = built;
const honest: BuildResult = { ...rest, objects: objects.count };

/** The three memfds a helper sends, of these facts, records and image (each sealed unless given as an fd). */
function sent(facts: unknown = honest, records: Buffer | number = objects.records, img: Uint8Array = image): number[] {
  return [sealedMemfd('facts', Buffer.from(JSON.stringify(facts))), typeof records === 'number' ? records : sealedMemfd('objects', records), sealedMemfd('image', img)];
}
const ok = { type: 'built', ok: true };
async function read(fds: number[], frame: Record<string, unknown> = ok) {
  try {
    return await readResult(frame, fds);
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

t.test('an honest result reads back as the build made it; its device nodes are named a few and counted', async (tt) => {
  tt.same(built.facts.devices, ['/d0', '/d1', '/d2'], 'the first three device paths');
  tt.equal(built.facts.deviceCount, 5, 'and how many there are');
  const got = await read(sent());
  tt.equal(got.imageId, built.imageId, 'the image id');
  tt.equal(got.name, 'small', 'its name');
  tt.same(got.facts, built.facts, 'its facts');
  tt.ok(Buffer.from(got.image).equals(Buffer.from(image)), 'the image bytes');
  tt.same(
    got.objects.slice(0, got.objects.count),
    Array.from({ length: 6 }, (_, k) => [digest(k), 100 + k]).sort(([a], [b]) => String(a).localeCompare(String(b))),
    'the six objects, sorted, each with its size',
  );
});

t.test('a refusal is the build error it names', async (tt) => {
  await tt.rejects(read([], { type: 'built', ok: false, reason: 'LimitExceeded', message: 'too big' }), { reason: 'LimitExceeded', message: 'too big' });
});

t.test('a result no helper sends is refused', async (tt) => {
  const records = (n: number) => objects.records.subarray(0, n * objectRecordBytes);
  const swapped = Buffer.from(objects.records);
  objects.records.copy(swapped, 0, objectRecordBytes, 2 * objectRecordBytes);
  const unsealed = memfdCreate('unsealed');
  const cases: [string, () => number[], RegExp][] = [
    ['two fds (the format before the object records)', () => sent().slice(0, 2), /sent 2 fds, not 3/],
    ['its records in a file that is not a sealed memfd', () => sent(honest, openSync('/dev/zero', 'r')), /object list in something other than a sealed memfd/],
    ['its records in a memfd not sealed', () => sent(honest, unsealed), /object list in something other than a sealed memfd/],
    ['an image id that is a path', () => sent({ ...honest, imageId: '../../etc' }), /an image id that is no sha256/],
    ['a keptFor that is no image id', () => sent({ ...honest, keptFor: 'x' }), /a keptFor that is no image id/],
    ['every device path', () => sent({ ...honest, facts: { ...honest.facts, devices: ['/a', '/b', '/c', '/d'] } }), /more than 3 device paths/],
    ['more objects than entries', () => sent({ ...honest, objects: honest.facts.entries + 1 }), /more than its entries/],
    ['fewer records than objects', () => sent(honest, records(5)), /200 bytes of object records for 6 objects/],
    ['records out of order', () => sent(honest, swapped), /object 1 .* out of order or twice/],
    ['facts that are not JSON', () => [sealedMemfd('facts', Buffer.from('{')), ...sent().slice(1)], /JSON/],
  ];
  for (const [what, fds, error] of cases) await tt.rejects(read(fds()), error, what);
});
