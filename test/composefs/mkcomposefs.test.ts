// A real tree of this machine, checked against the reference tool itself:
// mkcomposefs 1.0.8 makes an image of /usr/share/man (about 24,000 Debian
// files, hardlinks and symlinks, with their fs-verity digests), composefs-info
// prints its dump, and the image mountgate writes from that dump, through the
// manifest, must be byte for byte the one `mkcomposefs --from-file` writes for
// the same dump. Skipped, saying so, without the tools ($MOUNTGATE_REF_COMPOSEFS/bin or PATH).
import t from 'tap';
import fc from 'fast-check';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { manifestFromDumpText } from '../../src/composefs/convert.js';
import { parseDumpTable } from '../../src/composefs/dump.js';
import { dumpTreeSource } from '../../src/composefs/dump-tree.js';
import { writeImage, writeSourceImage } from '../../src/composefs/writer.js';

function findTool(name: string): string | undefined {
  const ref = process.env.MOUNTGATE_REF_COMPOSEFS;
  const dirs = [...(ref ? [join(ref, 'bin')] : []), ...(process.env.PATH ?? '').split(delimiter)];
  for (const d of dirs) if (d && existsSync(join(d, name))) return join(d, name);
  return undefined;
}

const mkcomposefs = findTool('mkcomposefs');
const composefsInfo = findTool('composefs-info');
const source = '/usr/share/man';

t.test(`the image of ${source}'s dump equals what mkcomposefs --from-file writes`, { skip: !mkcomposefs || !composefsInfo ? 'mkcomposefs and composefs-info not found ($MOUNTGATE_REF_COMPOSEFS/bin or PATH)' : !existsSync(source) ? `${source} is not there` : false }, async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'mountgate-mkcomposefs-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  execFileSync(mkcomposefs!, [source, join(work, 'source.cfs')]);
  const dump = execFileSync(composefsInfo!, ['dump', join(work, 'source.cfs')], { maxBuffer: 1 << 28 });
  const dumpFile = join(work, 'tree.dump');
  writeFileSync(dumpFile, dump);
  execFileSync(mkcomposefs!, ['--from-file', dumpFile, join(work, 'reference.cfs')]);
  const manifest = manifestFromDumpText(dump);
  t.ok(manifest.entries.length > 1000, `a real tree (${manifest.entries.length} entries)`);
  t.ok(manifest.entries.some((e) => e.type === 'hardlink') || manifest.entries.some((e) => e.type === 'symlink'), 'with links');
  const image = writeImage(manifest);
  t.ok(image.equals(readFileSync(join(work, 'reference.cfs'))), 'byte-identical to mkcomposefs --from-file');
  // The direct path (image build --from-dump) takes this dump, and writes the same bytes.
  const direct = dumpTreeSource(parseDumpTable(dump), true);
  t.ok(direct, 'the direct dump -> tree path takes a real dump');
  if (direct) t.ok(writeSourceImage(direct).equals(image), 'and writes the same bytes');
});

t.test('redirects to object paths, the file\'s own or not, are shared as mkcomposefs shares them', { skip: !mkcomposefs ? 'mkcomposefs not found ($MOUNTGATE_REF_COMPOSEFS/bin or PATH)' : false }, async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'mountgate-mkcomposefs-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const d1 = '7cc1da80364d50e9eccf06d5a581ca090d212755eaf6fd154db0ffc15cce3aa7';
  const d2 = '66a013e96334bece8e11131d8498df145270740aa75f258bab625b3377ee37bc';
  const objectPath = (d: string) => `${d.slice(0, 2)}/${d.slice(2)}`;
  const file = (path: string, backing: string, digest: string) => `${path} 4096 100644 1 0 0 0 0.0 ${backing} - ${digest}\n`;
  // Each file's own object path; another file's (shared with that file's
  // redirect); 64 digits with no "/" (not an object path); an upper-case
  // object path (not one either); and again each of them, to be shared.
  const dump = Buffer.from(
    '/ 4096 40755 2 0 0 0 0.0 - - -\n' +
      file('/a', objectPath(d1), d1) +
      file('/b', objectPath(d1), d2) +
      file('/c', d1, d2) +
      file('/d', objectPath(d1).toUpperCase(), d1) +
      file('/e', objectPath(d2), d2) +
      file('/f', d1, d1) +
      file('/g', objectPath(d1).toUpperCase(), d2) +
      file('/h', `x${objectPath(d2).slice(1)}`, d2),
  );
  const dumpFile = join(work, 'tree.dump');
  writeFileSync(dumpFile, dump);
  execFileSync(mkcomposefs!, ['--from-file', dumpFile, join(work, 'reference.cfs')]);
  const reference = readFileSync(join(work, 'reference.cfs'));
  t.ok(writeImage(manifestFromDumpText(dump)).equals(reference), 'manifest path: byte-identical to mkcomposefs --from-file');
  const direct = dumpTreeSource(parseDumpTable(dump), true);
  t.ok(direct && writeSourceImage(direct).equals(reference), 'direct dump path: the same');
});

t.test('metacopies and redirects kept as a file\'s own, and those shared, in any order: as mkcomposefs writes them', { skip: !mkcomposefs ? 'mkcomposefs not found ($MOUNTGATE_REF_COMPOSEFS/bin or PATH)' : false }, async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'mountgate-mkcomposefs-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const digests = ['7cc1da80364d50e9eccf06d5a581ca090d212755eaf6fd154db0ffc15cce3aa7', '66a013e96334bece8e11131d8498df145270740aa75f258bab625b3377ee37bc', 'a3d1815f4c33c0dd67bec58c0855a1fe3b8e6412fa8f68b0381a041c5534ea8a'];
  const objectPath = (d: string) => `${d.slice(0, 2)}/${d.slice(2)}`;
  // A file's digest (or none), its backing (none, its own object path, another digest's), and an xattr of its own or not.
  const spec = fc.record({ digest: fc.nat(3), backing: fc.constantFrom('none', 'own', 'other'), other: fc.nat(2), xattr: fc.boolean() });
  let shared = 0;
  fc.assert(fc.property(fc.array(spec, { minLength: 1, maxLength: 8 }), (files) => {
    const lines = files.map((f, i) => {
      const digest = digests[f.digest];
      const backing = f.backing === 'none' ? '-' : objectPath(f.backing === 'own' && digest ? digest : digests[f.other]!);
      return `/f${i} 4096 100644 1 0 0 0 0.0 ${backing} - ${digest ?? '-'}${f.xattr ? ' user.x=1' : ''}\n`;
    });
    const dump = Buffer.from('/ 4096 40755 2 0 0 0 0.0 - - -\n' + lines.join(''));
    const dumpFile = join(work, 'tree.dump');
    writeFileSync(dumpFile, dump);
    execFileSync(mkcomposefs!, ['--from-file', dumpFile, join(work, 'reference.cfs')]);
    const reference = readFileSync(join(work, 'reference.cfs'));
    if (new Set(files.map((f) => f.digest)).size < files.length) shared++;
    if (!writeImage(manifestFromDumpText(dump)).equals(reference)) throw new Error(`manifest path differs:\n${dump}`);
    const direct = dumpTreeSource(parseDumpTable(dump), true);
    if (!direct || !writeSourceImage(direct).equals(reference)) throw new Error(`direct dump path differs:\n${dump}`);
  }), { numRuns: 60, seed: 31 });
  t.ok(shared >= 20, `${shared} of 60 trees with a digest on more than one file`);
});
