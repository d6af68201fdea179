// The software fs-verity digest must equal what `fsverity digest` prints, for
// sizes around the block boundaries and for a tree with more than one level.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync, createReadStream, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FsVerityHasher, fsverityDigestHex, fsverityDigestOfStream } from '../../src/verity/fsverity.js';

const dir = mkdtempSync(join(tmpdir(), 'mountgate-verity-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function toolDigest(file: string): string {
  const out = execFileSync('fsverity', ['digest', file], { encoding: 'utf8' });
  const m = /^sha256:([0-9a-f]{64}) /.exec(out);
  if (!m) throw new Error(`unexpected fsverity output: ${out}`);
  return m[1]!;
}

const cases: Array<[string, number]> = [
  ['empty', 0],
  ['one byte', 1],
  ['one block', 4096],
  ['one block and a byte', 4097],
  ['two tree levels (1.2 MiB)', 1_200_000],
  ['exactly 128 blocks (one full hash block)', 128 * 4096],
  ['three tree levels', 129 * 128 * 4096 + 5],
];

for (const [name, size] of cases) {
  t.test(`digest of ${name} matches fsverity digest`, async (t) => {
    const data = randomBytes(size);
    const file = join(dir, `f${size}`);
    writeFileSync(file, data);
    const expected = toolDigest(file);
    t.equal(fsverityDigestHex(data), expected, 'in one piece');
    const h = new FsVerityHasher();
    for (let i = 0; i < data.length; i += 1000) h.update(data.subarray(i, i + 1000));
    t.equal(h.digest().toString('hex'), expected, 'fed in 1000-byte chunks');
    t.equal((await fsverityDigestOfStream(createReadStream(file))).toString('hex'), expected, 'streamed from the file');
  });
}

t.test('the digest of an empty file has an all-zero root hash', async (t) => {
  t.same(new FsVerityHasher().rootHash(), Buffer.alloc(32));
});

t.test('update after digest is refused', async (t) => {
  const h = new FsVerityHasher();
  h.digest();
  t.throws(() => h.update(Buffer.from('x')));
});

t.test('a reset hasher gives the digest of the next file alone, after a deeper one', async (t) => {
  const big = randomBytes(129 * 4096 + 7);
  const small = randomBytes(5000);
  const h = new FsVerityHasher();
  t.equal(h.update(big).digest().toString('hex'), fsverityDigestHex(big), 'the first file');
  t.equal(h.reset().update(small).digest().toString('hex'), fsverityDigestHex(small), 'the second, smaller file');
  t.equal(h.reset().digest().toString('hex'), fsverityDigestHex(Buffer.alloc(0)), 'an empty file');
});
