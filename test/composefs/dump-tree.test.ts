// The direct dump -> tree path (src/composefs/dump-tree.ts) against the
// manifest path it stands in for: on generated dumps (every kind of entry,
// byte names, hardlinks, xattrs), the same dumps mutated byte by byte, and
// arbitrary dump lines, strict and lenient, at format versions 0 and 1. What
// it takes, the manifest path takes too and writes to the same bytes; what
// the manifest path refuses, it declines, so writeDumpImage refuses it with
// the manifest path's words.
import t from 'tap';
import fc from 'fast-check';
import { manifestFromDumpText, manifestToDump, writeDumpImage } from '../../src/composefs/convert.js';
import { parseDumpTable, serializeDump } from '../../src/composefs/dump.js';
import { dumpTreeSource } from '../../src/composefs/dump-tree.js';
import { endsWithNewline } from '../../src/composefs/dump.js';
import { writeCheckedImage, writeSourceImage } from '../../src/composefs/writer.js';
import { InvalidManifestError } from '../../src/manifest/errors.js';
import { dumpLines, mutate, toManifest, treeInput } from '../fuzz/properties.js';

type Outcome = { image: Buffer } | { refusal: string } | { declined: true };

/** The manifest path's verdict: the image, or the refusal's words. */
function manifestPath(text: Buffer, strict: boolean, minVersion: number): Outcome {
  try {
    return { image: writeCheckedImage(manifestFromDumpText(text, { strict }), { minVersion, maxVersion: 1 }) };
  } catch (err) {
    if (!(err instanceof InvalidManifestError)) throw err;
    return { refusal: `${err.pointer}: ${err.message}` };
  }
}

/** The direct path's: the image, or declined (a dump the parser itself refuses is the manifest path's to word). */
function directPath(text: Buffer, strict: boolean, minVersion: number): Outcome {
  let dump;
  try {
    dump = parseDumpTable(text, { strict, allowMissingFinalNewline: true });
  } catch {
    return { declined: true };
  }
  const source = dumpTreeSource(dump, !strict || endsWithNewline(text));
  return source ? { image: writeSourceImage(source, { minVersion, maxVersion: 1 }) } : { declined: true };
}

const counts = { taken: 0, declined: 0, refused: 0 };

function agree(text: Buffer): void {
  for (const strict of [true, false]) {
    for (const minVersion of [0, 1]) {
      const slow = manifestPath(text, strict, minVersion);
      const fast = directPath(text, strict, minVersion);
      if ('refusal' in slow) counts.refused++;
      if ('declined' in fast) {
        counts.declined++;
        continue;
      }
      counts.taken++;
      const show = () => `strict ${strict}, format ${minVersion}:\n${text.toString('latin1').slice(0, 2000)}`;
      if (!('image' in slow)) throw new Error(`the direct path took a dump the manifest path refuses (${slow.refusal}), ${show()}`);
      if (!('image' in fast) || !fast.image.equals(slow.image)) throw new Error(`the direct path wrote other bytes, ${show()}`);
      // And the whole of writeDumpImage says the same.
      if (!writeDumpImage(text, { strict, minVersion, maxVersion: 1 }).equals(slow.image)) throw new Error(`writeDumpImage differs, ${show()}`);
    }
  }
}

const mutation = fc.record({ at: fc.nat(), kind: fc.constantFrom('flip', 'set', 'insert', 'delete', 'repeat'), byte: fc.constantFrom(0x00, 0x0a, 0x20, 0x2f, 0x3d, 0x40, 0x5c, 0x2d, 0x78, 0x2e, 0xff, 0x80, 0x39, 0x30), bit: fc.integer({ min: 0, max: 7 }), len: fc.integer({ min: 1, max: 64 }) });

t.test('generated trees: the direct path takes them and writes the manifest path\'s bytes', async (t) => {
  const before = counts.taken;
  fc.assert(fc.property(treeInput, (input) => agree(serializeDump(manifestToDump(toManifest(input))))), { numRuns: 150, seed: 11 });
  t.ok(counts.taken - before >= 150, `taken ${counts.taken - before} times of 600`);
});

t.test('mutated dumps: taken only when the manifest path takes them, and to the same bytes', async (t) => {
  fc.assert(fc.property(treeInput, fc.array(mutation, { minLength: 1, maxLength: 4 }), (input, list) => agree(mutate(serializeDump(manifestToDump(toManifest(input))), list))), { numRuns: 300, seed: 12 });
  t.pass(`taken ${counts.taken}, declined ${counts.declined}, refused by the manifest path ${counts.refused}`);
});

t.test('arbitrary dump lines (any bytes, any numbers): the same', async (t) => {
  fc.assert(fc.property(dumpLines, (lines) => agree(serializeDump([{ ...lines[0]!, path: Buffer.from('/'), mode: 0o40755, hardlink: false }, ...lines]))), { numRuns: 300, seed: 13 });
  t.pass(`taken ${counts.taken}, declined ${counts.declined}, refused ${counts.refused}`);
});

t.test('refusals keep the manifest path\'s words', async (t) => {
  for (const [text, words] of [
    ['/ 0 40755 2 0 0 0 0.0 - - -\n/b 0 100644 1 0 0 0 0.0 - - -\n/a 0 100644 1 0 0 0 0.0 - - -\n', null],
    ['/ 0 40755 2 0 0 0 0.0 - - -\n/x 0 100644 0 0 0 0 0.0 - - -\n', /nlink is 0/],
    ['/ 0 40755 2 0 0 0 0.0 - - -\n/a/b 0 100644 1 0 0 0 0.0 - - -\n', /parent directory "\/a" of "b" is not in the manifest/],
    ['/ 0 40755 2 0 0 0 0.0 - - -\n/h 0 @100644 1 0 0 0 0.0 /nowhere - -\n', /hardlink target "\/nowhere" is not in the manifest/],
    ['/ 0 40755 2 0 0 0 0.0 - - -', /the last line has no newline/],
  ] as const) {
    const slow = manifestPath(Buffer.from(text), true, 0);
    let direct: string;
    try {
      direct = writeDumpImage(Buffer.from(text)).toString('hex');
    } catch (err) {
      direct = `${(err as InvalidManifestError).pointer}: ${(err as Error).message}`;
    }
    if ('refusal' in slow) t.equal(direct, slow.refusal, slow.refusal);
    else t.equal(direct, (slow as { image: Buffer }).image.toString('hex'), 'an unsorted dump is sorted by the manifest path, as before');
    if (words) t.match(direct, words);
  }
});
