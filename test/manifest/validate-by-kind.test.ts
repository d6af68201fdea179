// validateManifest checks each entry against the schema of the kind its
// "type" names, not against all nine kinds of the schema's oneOf. It must
// accept and refuse exactly what the full schema does: mutations of a valid
// manifest, each compared with the full schema's verdict.
import t from 'tap';
import { InvalidManifestError } from '../../src/manifest/errors.js';
import { validateManifest } from '../../src/manifest/load.js';
import { validate } from '../../src/schema/validate.js';

const mtime = { sec: 1700000000, nsec: 0 };
const valid = () => ({
  version: 1,
  entries: [
    { path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime } as Record<string, unknown>,
    { path: '/f', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size: 3, inline: 'YWJj', xattrs: [{ key: 'user.a', value: '' }] } as Record<string, unknown>,
    { path: '/l', type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime, target: 'f' } as Record<string, unknown>,
  ] as unknown[],
}) as { version: unknown; entries: unknown[]; [k: string]: unknown };

type Doc = ReturnType<typeof valid>;
const file = (d: Doc) => d.entries[1] as Record<string, unknown>;

const mutations: Record<string, (d: Doc) => void> = {
  'unchanged': () => {},
  'no version': (d) => delete d.version,
  'version 2': (d) => (d.version = 2),
  'a top-level unknown field': (d) => (d.extra = 1),
  'an empty name': (d) => (d.name = ''),
  'no entries': (d) => (d.entries = []),
  'entries not an array': (d) => (d.entries = {}),
  'an entry that is null': (d) => (d.entries[2] = null),
  'an entry that is a number': (d) => (d.entries[2] = 5),
  'an entry that is an array': (d) => (d.entries[2] = []),
  'type missing': (d) => delete file(d).type,
  'type a number': (d) => (file(d).type = 1),
  'type __proto__': (d) => (file(d).type = '__proto__'),
  'type constructor': (d) => (file(d).type = 'constructor'),
  'type dir on a file entry': (d) => (file(d).type = 'dir'),
  'type hardlink on a file entry': (d) => (file(d).type = 'hardlink'),
  'type chardev without rdev': (d) => (file(d).type = 'chardev'),
  'size missing': (d) => delete file(d).size,
  'size negative': (d) => (file(d).size = -1),
  'size a string': (d) => (file(d).size = '3'),
  'mode too large': (d) => (file(d).mode = 0o10000),
  'mtime with an unknown field': (d) => (file(d).mtime = { ...mtime, x: 1 }),
  'nsec too large': (d) => (file(d).mtime = { sec: 0, nsec: 1e9 }),
  'an unknown field': (d) => (file(d).color = 'red'),
  'digest in capitals': (d) => (file(d).digest = 'A'.repeat(64)),
  'xattr value not base64': (d) => (file(d).xattrs = [{ key: 'user.a', value: '!' }]),
  'xattr without value': (d) => (file(d).xattrs = [{ key: 'user.a' }]),
  'xattr key empty': (d) => (file(d).xattrs = [{ key: '', value: '' }]),
  'symlink target empty': (d) => ((d.entries[2] as Record<string, unknown>).target = ''),
  'path relative': (d) => (file(d).path = 'f'),
};

for (const [name, mutate] of Object.entries(mutations)) {
  t.test(`by-kind validation agrees with the full schema: ${name}`, async (t) => {
    const doc = valid();
    mutate(doc);
    const schemaAccepts = validate('manifest', structuredClone(doc)).ok;
    let refusal: unknown;
    try {
      validateManifest(doc);
    } catch (err) {
      refusal = err;
    }
    if (schemaAccepts) {
      t.equal(refusal, undefined, 'accepted, as by the full schema');
    } else {
      t.type(refusal, InvalidManifestError, 'refused, as by the full schema');
    }
  });
}
