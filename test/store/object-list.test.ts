// The packed object list a build helper hands the front
// (src/store/object-list.ts): what is packed is what is decoded, sorted by
// digest; records no helper packs (a short one, a count they do not match,
// a digest out of order or twice, a size no file has) are refused; and
// checking a big list takes many short turns of the event loop, not one.
import t from 'tap';
import { createHash } from 'node:crypto';
import { ObjectList, objectRecordBytes } from '../../src/store/object-list.js';
import { countTurns } from '../helpers/turns.js';

const digest = (k: number) => createHash('sha256').update(`object ${k}`).digest('hex');
const objects = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, k) => [digest(k), 1 + k * 7919]));

t.test('packed sorted by digest, and decoded slice by slice to the same objects and sizes', async (tt) => {
  const given = { ...objects(1000), [digest(5000)]: 2 ** 53 - 1 };
  const list = ObjectList.pack(given);
  tt.equal(list.count, 1001, 'one record per object');
  tt.equal(list.records.length, 1001 * objectRecordBytes, `of ${objectRecordBytes} bytes`);
  const rows = [...list.slice(0, 600), ...list.slice(600, 2000)];
  tt.same(rows.map(([d]) => d), Object.keys(given).sort(), 'every digest, in order');
  tt.same(Object.fromEntries(rows), given, 'each with its size (up to 2^53 - 1)');
  const checked = await ObjectList.check(Buffer.from(list.records), list.count);
  tt.same(checked.slice(0, checked.count), rows, 'a checked copy decodes the same');
  tt.same((await ObjectList.check(Buffer.alloc(0), 0)).slice(0, 10), [], 'an image without objects has an empty list');
});

t.test('records a build helper would not send are refused', async (tt) => {
  const good = ObjectList.pack(objects(10)).records;
  const at = (k: number) => k * objectRecordBytes;
  await tt.rejects(ObjectList.check(good.subarray(0, good.length - 1), 10), /sent 399 bytes of object records for 10 objects/, 'a short record');
  await tt.rejects(ObjectList.check(good, 11), /for 11 objects/, 'a count the records do not match');
  await tt.rejects(ObjectList.check(good, 10.5), /for 10.5 objects/, 'a count that is no count');
  const twice = Buffer.from(good);
  good.copy(twice, at(4), at(3), at(4));
  await tt.rejects(ObjectList.check(twice, 10), /object 4 \([0-9a-f]{64}\) out of order or twice/, 'a digest twice');
  const swapped = Buffer.from(good);
  good.copy(swapped, at(3), at(4), at(5));
  good.copy(swapped, at(4), at(3), at(4));
  await tt.rejects(ObjectList.check(swapped, 10), /object 4 .* out of order or twice/, 'digests out of order');
  const empty = Buffer.from(good);
  empty.fill(0, at(2) + 32, at(3));
  await tt.rejects(ObjectList.check(empty, 10), /object 2 .* with a size of no file/, 'a size of 0 (such files need no object)');
  const huge = Buffer.from(good);
  huge.writeUInt32LE(2 ** 21, at(7) + 36);
  await tt.rejects(ObjectList.check(huge, 10), /object 7 .* with a size of no file/, 'a size past 2^53 - 1');
  tt.throws(() => ObjectList.pack({ [digest(1)]: 0 }), /cannot be packed/, 'the helper packs no size of 0');
  tt.throws(() => ObjectList.pack({ abc: 1 }), /cannot be packed/, 'nor a digest that is not one');
});

t.test('a list of 100k objects is checked in many short turns, not in one', async (tt) => {
  const list = ObjectList.pack(objects(100_000));
  const stopCounting = countTurns();
  const checked = await ObjectList.check(list.records, list.count, 1000);
  const turns = stopCounting();
  tt.equal(checked.count, 100_000, 'checked whole');
  tt.ok(turns >= 99, `other callbacks ran between its slices of 1000 (${turns} turns)`);
});
