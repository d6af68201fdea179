// The dump text format on its own: escapes both ways, strict versus lenient
// parsing, and error messages that name the line.
import t from 'tap';
import { escapeField, parseDump, serializeDump, unescapeField } from '../../src/composefs/dump.js';
import { manifestFromDumpText } from '../../src/composefs/convert.js';
import { InvalidManifestError } from '../../src/manifest/errors.js';

t.test('escaping follows composefs-info', async (t) => {
  t.equal(escapeField(Buffer.from('plain/path')), 'plain/path');
  t.equal(escapeField(Buffer.from('a b\\c\n\r\t')), 'a\\x20b\\\\c\\n\\r\\t');
  t.equal(escapeField(Buffer.from([0, 0x7f, 0xff])), '\\x00\\x7f\\xff');
  t.equal(escapeField(Buffer.from('k=v'), 1), 'k\\x3dv', '= escaped in xattrs');
  t.equal(escapeField(Buffer.from('-'), 2), '\\x2d', 'a lone dash is not "absent"');
  t.equal(escapeField(Buffer.from('--'), 2), '--');
});

t.test('unescaping accepts every escape and refuses broken ones', async (t) => {
  t.same(unescapeField(Buffer.from('a\\x20b\\\\\\n\\r\\t\\xFF')), Buffer.from([0x61, 0x20, 0x62, 0x5c, 0x0a, 0x0d, 0x09, 0xff]));
  t.throws(() => unescapeField(Buffer.from('a\\')), /backslash ends/);
  t.throws(() => unescapeField(Buffer.from('\\x4')), /two hex digits/);
  t.throws(() => unescapeField(Buffer.from('\\q')), /unsupported escape/);
});

const root = '/ 4096 40755 2 0 0 0 0.0 - - -\n';

t.test('a line round-trips field by field', async (t) => {
  const line = '/f\\x20x 3 100644 1 1000 1000 0 1.5 - a=b - user.k\\x3d=v\\x3d\n';
  const text = Buffer.from(root + line);
  t.ok(serializeDump(parseDump(text)).equals(text));
});

t.test('strict parsing refuses what mkcomposefs only tolerates; lenient accepts it', async (t) => {
  const cases: Array<[string, RegExp]> = [
    [root + '/l 5 120777 1 0 0 0 0.0 target - -\n', /symlink SIZE 5 is not the length of its target \(6\)/],
    [root + '/l 6 120777 1 0 0 0 0.0 target xxxxxx -\n', /a symlink cannot have CONTENT/],
    [root + '/f 0 100644 1 0 0 7 0.0 - - -\n', /RDEV 7 on something that is not a device/],
    [root + '/f 0 100644 1 0 0 0 0.0 - - -', /no newline/],
  ];
  for (const [text, message] of cases) {
    t.throws(() => manifestFromDumpText(text), message);
    t.doesNotThrow(() => manifestFromDumpText(text, { strict: false }));
  }
});

t.test('errors name the line', async (t) => {
  const err = t.throws(() => parseDump(root + '/x 0 100644 1 0 0 0 zero - - -\n')) as InvalidManifestError;
  t.type(err, InvalidManifestError);
  t.equal(err.pointer, 'line 2');
  t.match(err.message, /mtime/);
  t.throws(() => parseDump(''), /no entries/);
  t.throws(() => parseDump(root + '/x\x00 0 100644 1 0 0 0 0.0 - - -\n'), /embedded NUL/);
  t.throws(() => parseDump(root + '/x 0 100644 1 0 0 0 0.0 - - - novalue\n'), /has no "="/);
  t.throws(() => manifestFromDumpText(root + '/a/b 0 100644 1 0 0 0 0.0 - - -\n'), /parent directory "\/a"/);
});

t.test('hardlink chains resolve to the final target; cycles are refused', async (t) => {
  const file = '/a 1 100644 3 0 0 0 0.0 - x -\n';
  const chain = root + file + '/b 0 @100644 0 0 0 0 0.0 /a - -\n/c 0 @100644 0 0 0 0 0.0 /b - -\n';
  const m = manifestFromDumpText(chain);
  t.same(m.entries[3], { path: '/c', type: 'hardlink', target: '/a' });
  const cycle = root + '/b 0 @100644 0 0 0 0 0.0 /c - -\n/c 0 @100644 0 0 0 0 0.0 /b - -\n';
  t.throws(() => manifestFromDumpText(cycle), /cycle/);
});
