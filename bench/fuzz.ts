// Long fuzzing runs of the properties in test/fuzz/properties.ts (the test
// suite runs the same properties with a fixed seed and few runs): schema and
// semantic validation of arbitrary JSON, the writer on generated trees (with
// fsck.erofs on every Kth image), manifest <-> dump, dump parse/serialize with
// arbitrary bytes, and byte mutations of valid dumps and images.
// Run: npx tsx bench/fuzz.ts [--runs N] [--seed S] [--only NAME[,NAME]] [--fsck-every K]
// A failure prints the seed, the path to replay it and the shrunk
// counterexample, and exits 1; turn it into a named test in
// test/fuzz/regressions.test.ts.
import fc from 'fast-check';
import { cleanupFsck, properties } from '../test/fuzz/properties.js';

function option(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const runs = Number(option('--runs') ?? 1000);
const seed = Number(option('--seed') ?? Date.now() % 2 ** 31);
const fsckEvery = Number(option('--fsck-every') ?? 10);
const names = (option('--only')?.split(',') ?? Object.keys(properties)) as Array<keyof typeof properties>;
for (const n of names) if (!(n in properties)) throw new Error(`unknown property ${n}: one of ${Object.keys(properties).join(', ')}`);

let failed = false;
console.log(`seed ${seed}, ${runs} runs per property`);
for (const name of names) {
  const property = name === 'writer' ? properties.writer(fsckEvery) : properties[name]();
  const started = process.hrtime.bigint();
  const result = fc.check(property as fc.IProperty<unknown[]>, { numRuns: runs, seed });
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  if (result.failed) {
    failed = true;
    console.log(`${name.padEnd(15)} FAILED after ${result.numRuns} runs (${ms.toFixed(0)} ms): seed ${result.seed}, path "${result.counterexamplePath}"`);
    console.log(`  counterexample: ${fc.stringify(result.counterexample).slice(0, 4000)}`);
    console.log(`  error: ${String((result.errorInstance as Error)?.message ?? result.errorInstance).slice(0, 2000)}`);
  } else {
    console.log(`${name.padEnd(15)} ok     ${String(result.numRuns).padStart(7)} runs  ${ms.toFixed(0).padStart(8)} ms  ${(ms / result.numRuns).toFixed(2)} ms/run`);
  }
}
cleanupFsck();
process.exit(failed ? 1 : 0);
