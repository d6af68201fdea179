// Property-based fuzzing, fixed seeds and few runs (the long runs are
// bench/fuzz.ts): validation, the dump parser, the converter, the writer and
// the reader (test/fuzz/properties.ts says what each property is). About
// 10 s in all; the writer runs fsck.erofs on every 8th image.
import t from 'tap';
import fc from 'fast-check';
import { cleanupFsck, properties } from './properties.js';

t.teardown(cleanupFsck);

const runs: Record<keyof typeof properties, number> = {
  validation: 300,
  writer: 80,
  'manifest-dump': 150,
  'dump-parse': 1000,
  'dump-mutation': 300,
  'image-mutation': 300,
};

for (const [name, numRuns] of Object.entries(runs) as Array<[keyof typeof properties, number]>) {
  t.test(`fuzz ${name}: ${numRuns} runs, seed 7`, async (t) => {
    const started = Date.now();
    const property = name === 'writer' ? properties.writer(8) : properties[name]();
    fc.assert(property as fc.IProperty<unknown[]>, { numRuns, seed: 7 });
    t.pass(`${numRuns} runs in ${Date.now() - started} ms`);
  });
}
