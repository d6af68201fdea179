// Byte-exact conformance with mkcomposefs 1.0.8 on the composefs project's own
// test assets: every image sha256, every refusal, the dump <-> manifest round
// trip, and image -> dump through our reader.
import t from 'tap';
import { createHash } from 'node:crypto';
import { manifestFromDumpText, manifestToDump } from '../../src/composefs/convert.js';
import { serializeDump } from '../../src/composefs/dump.js';
import { imageToDumpEntries } from '../../src/composefs/reader.js';
import { writeImage } from '../../src/composefs/writer.js';
import { InvalidManifestError } from '../../src/manifest/errors.js';
import { lenientAssets, loadAssets } from './assets.js';

const assets = loadAssets();

/** What each refusal must mention: the actual problem, not a side effect. */
const expectedRefusals: Record<string, RegExp> = {
  'should-fail-big-inline.dump': /inline content of 5004 bytes exceeds the maximum 5000/,
  'should-fail-dir-hardlink.dump': /directory cannot be a hardlink/,
  'should-fail-dot-name.dump': /name "\."/,
  'should-fail-dotdot-name.dump': /name "\.\."/,
  'should-fail-empty-link-name.dump': /symlink has no target/,
  'should-fail-empty-name.dump': /empty name/,
  'should-fail-empty-xattr-key.dump': /xattrs\/0\/key.*too short/,
  'should-fail-honggfuzz-long-xattr.dump': /xattr/,
  'should-fail-long-link.dump': /7248 bytes long, at most 4095/,
  'should-fail-long-xattr-key.dump': /xattrs take 123219 bytes/,
  'should-fail-long-xattr-value.dump': /mode 644 has no valid file type/,
  'should-fail-no-ftype.dump': /mode 0 has no valid file type/,
  'should-fail-self-hardlink.dump': /points to itself/,
  'should-fail-too-big.dump': /file size 9500000000000000 exceeds/,
};

function options(version: number | undefined) {
  return version === undefined ? {} : { minVersion: version, maxVersion: version };
}

t.test('the conformance assets are there', async (t) => {
  t.ok(assets.filter((a) => a.sha256).length >= 13, 'at least 13 assets with an expected sha256');
  t.ok(assets.filter((a) => a.shouldFail).length >= 14, 'at least 14 should-fail assets');
});

for (const asset of assets.filter((a) => a.sha256)) {
  t.test(`${asset.name}: image sha256 equals mkcomposefs 1.0.8`, async (t) => {
    const manifest = manifestFromDumpText(asset.dump, { strict: !lenientAssets.has(asset.name) });
    const image = writeImage(manifest, options(asset.version));
    t.equal(createHash('sha256').update(image).digest('hex'), asset.sha256);
  });
}

for (const asset of assets.filter((a) => a.shouldFail)) {
  t.test(`${asset.name} is refused and names the problem`, async (t) => {
    let image: Buffer | undefined;
    const err = t.throws(() => {
      image = writeImage(manifestFromDumpText(asset.dump), {});
    }) as unknown;
    t.type(err, InvalidManifestError);
    t.equal(image, undefined, 'no image');
    const expected = expectedRefusals[asset.name];
    t.ok(expected, 'the test knows this asset');
    if (expected) t.match((err as Error).message, expected);
    // Lenient parsing must not let any of them through either.
    t.throws(() => writeImage(manifestFromDumpText(asset.dump, { strict: false }), {}), InvalidManifestError, 'refused when lenient too');
  });
}

for (const asset of assets.filter((a) => !a.shouldFail)) {
  t.test(`${asset.name}: dump -> manifest -> dump`, async (t) => {
    const text = serializeDump(manifestToDump(manifestFromDumpText(asset.dump, { strict: !lenientAssets.has(asset.name) })));
    if (lenientAssets.has(asset.name)) {
      // Lenient input is normalized (final newline, symlink size, rdev): it must then be stable.
      t.not(text.equals(asset.dump), true, 'normalized');
      const again = serializeDump(manifestToDump(manifestFromDumpText(text)));
      t.ok(again.equals(text), 'the normalized dump round-trips exactly, strictly');
    } else {
      t.ok(text.equals(asset.dump), 'same text');
    }
  });
}

/** Assets whose image reads back to the very same dump (the others differ as composefs-info's do). */
const readBackExactly = new Set([
  'bigfile-xattr.dump', 'bigfile.dump', 'config-with-hard-link.dump', 'config.dump', 'cs9-x86_64-minimal.dump',
  'honggfuzz-bigfile-with-acl.dump', 'honggfuzz-long-symlink.dump', 'special.dump',
]);

for (const asset of assets.filter((a) => a.sha256)) {
  t.test(`${asset.name}: image -> dump`, async (t) => {
    const manifest = manifestFromDumpText(asset.dump, { strict: !lenientAssets.has(asset.name) });
    const image = writeImage(manifest, options(asset.version));
    const text = serializeDump(imageToDumpEntries(image));
    if (readBackExactly.has(asset.name)) {
      t.ok(text.equals(asset.dump), 'reads back to the original dump');
    } else {
      // Directory sizes and link counts come back as the image stores them, a
      // non-zero whiteout size is dropped and format 1 opaque markers show up:
      // what composefs-info dump prints too. Rebuilding from it is stable.
      const rebuilt = writeImage(manifestFromDumpText(text), options(asset.version ?? 1));
      t.ok(writeImage(manifestFromDumpText(serializeDump(imageToDumpEntries(rebuilt))), options(asset.version ?? 1)).equals(rebuilt), 'read-back is a fixed point');
    }
  });
}
