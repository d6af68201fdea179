// The tree's digest pool (src/composefs/digests.ts): what it stages and what
// it refuses, that every digest added is found again under its id (across the
// index's growth, among many that are not there), and the bytes the writer
// takes from it: the digest itself, its hex, and its object path.
import t from 'tap';
import { createHash } from 'node:crypto';
import { DigestPool } from '../../src/composefs/digests.js';

const digestOf = (i: number) => createHash('sha256').update(`d${i}`).digest('hex');

t.test('stages 64 hex digits: a string in lowercase only, bytes in either case', async (t) => {
  const pool = new DigestPool<number>();
  const d = digestOf(1);
  t.ok(pool.stageString(d));
  t.notOk(pool.stageString(d.toUpperCase()), 'the schema\'s spelling is lowercase');
  t.notOk(pool.stageString(d.slice(1)), 'too short');
  t.notOk(pool.stageString(`${d}0`), 'too long');
  t.notOk(pool.stageString(`${d.slice(0, 63)}g`), 'not hex');
  t.notOk(pool.stageString(`${d.slice(0, 62)}\u0130a`), 'not ASCII');
  const upper = Buffer.from(`x${d.toUpperCase()}x`, 'latin1');
  t.ok(pool.stageHex(upper, 1, 65), 'a dump may spell it in capitals');
  t.equal(pool.hex(pool.addStaged(7)), d, 'and it is the same digest');
  t.notOk(pool.stageHex(upper, 0, 64), 'a range that is not 64 digits');
  t.notOk(pool.stageHex(Buffer.from(`${d.slice(0, 10)}\\x41${d.slice(14)}`, 'latin1'), 0, 64), 'an escape in place is not hex');
  t.equal(pool.size, 1);
});

t.test('every digest added is found under its id, and no other is, as the pool grows', async (t) => {
  const pool = new DigestPool<number>();
  const n = 20_000;
  let wrong = 0;
  for (let i = 0; i < n; i++) {
    if (!pool.stageString(digestOf(i)) || pool.findStaged() !== -1 || pool.addStaged(i * 3) !== i) wrong++;
  }
  for (let i = 0; i < n; i++) {
    pool.stageString(digestOf(i));
    const id = pool.findStaged();
    if (id !== i || pool.value(id) !== i * 3 || pool.hex(id) !== digestOf(i)) wrong++;
    pool.stageString(digestOf(n + i));
    if (pool.findStaged() !== -1) wrong++;
  }
  t.equal(wrong, 0, `${n} added under their ids, then ${n} found and ${n} others not`);
  pool.setValue(5, -1);
  t.equal(pool.value(5), -1);
  t.equal(pool.size, n, 'staging adds nothing');
});

t.test('writes the digest\'s bytes, its hex and its object path; knows its object path as written', async (t) => {
  const pool = new DigestPool<null>();
  const d = digestOf(42);
  pool.stageString(d);
  const path = Buffer.from(`${d.slice(0, 2)}/${d.slice(2)}`, 'latin1');
  t.ok(pool.isStagedObjectPath(path, 0, path.length));
  t.notOk(pool.isStagedObjectPath(Buffer.from(`${d.slice(0, 2)}/${d.slice(2)}`.toUpperCase(), 'latin1'), 0, path.length), 'in capitals it is another path');
  t.notOk(pool.isStagedObjectPath(Buffer.from(`${d.slice(0, 3)}/${d.slice(3)}`, 'latin1'), 0, path.length), 'the "/" elsewhere');
  t.notOk(pool.isStagedObjectPath(path, 0, path.length - 1), 'a prefix');
  const other = digestOf(43);
  t.notOk(pool.isStagedObjectPath(Buffer.from(`${other.slice(0, 2)}/${other.slice(2)}`, 'latin1'), 0, path.length), 'another digest\'s');
  const id = pool.addStaged(null);
  const out = Buffer.alloc(70, 0xee);
  pool.copyTo(id, out, 1);
  t.same(out.subarray(1, 33), Buffer.from(d, 'hex'));
  t.equal(out[0], 0xee);
  t.equal(out[33], 0xee);
  pool.writeHex(id, out, 2, true);
  t.equal(out.toString('latin1', 2, 67), path.toString('latin1'));
  pool.writeHex(id, out, 0, false);
  t.equal(out.toString('latin1', 0, 64), d);
});
