// POSIX ACLs in tar archives (PAX SCHILY.acl.access and SCHILY.acl.default):
// the text forms GNU tar, star and libarchive write become the very bytes
// the kernel keeps in system.posix_acl_access / system.posix_acl_default
// (compared with what setfacl made it store), and an archive made by GNU
// tar --acls imports so that getfacl, run by the user through the mounted
// image, shows every entry, its ids mapped as the owners are; export-layer
// still gives back the archive byte for byte.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { aclXattr } from '../../src/import/acl.js';
import type { World } from '../helpers/world.js';
import { cliAs, importWorld } from './world.js';

const noNames = { user: () => undefined, group: () => undefined };
/** The value the kernel stores for an xattr, as getfattr shows it in hex. */
const kernelValue = (path: string, key: string) => {
  const out = execFileSync('getfattr', ['--absolute-names', '-e', 'hex', '-n', key, path], { encoding: 'utf8' });
  return Buffer.from(/=0x([0-9a-f]+)/.exec(out)![1]!, 'hex');
};

t.test('text ACLs become the bytes the kernel stores', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mountgate-acl.'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const f = join(dir, 'f');
  writeFileSync(f, '');
  execFileSync('setfacl', ['-m', 'u:1234:rw,u:99:r,g:2345:r,g::r,m::rw,o::-', f]);
  const want = kernelValue(f, 'system.posix_acl_access');
  // GNU tar's lines (in the kernel's order or not), star's commas with ids after names, and short tags.
  t.same(aclXattr('user::rw-\nuser:1234:rw-\nuser:99:r--\ngroup::r--\ngroup:2345:r--\nmask::rw-\nother::---\n', 'access', 'f', noNames), want, 'GNU tar');
  t.same(aclXattr('user::rw-,user:alice:rw-:1234,user:bin:r--:99,group::r--,group:staff:r--:2345,mask::rw-,other::---', 'access', 'f', noNames), want, 'star, libarchive');
  t.same(aclXattr('o::---,m::rw-,g:2345:r,u:99:r,u:1234:rw,g::r,u::rw', 'access', 'f', noNames), want, 'short tags, any order');
  t.same(aclXattr('user::rw-\nuser:someone:rw-\nuser:99:r--\ngroup::r--\ngroup:2345:r--\nmask::rw-\nother::---\n', 'access', 'f', { user: (n) => (n === 'someone' ? 1234 : undefined), group: () => undefined }), want, 'a name resolved');
  const d = join(dir, 'd');
  mkdirSync(d);
  execFileSync('setfacl', ['-d', '-m', 'u::rwx,u:1234:rx,g::rx,o::-', d]);
  t.same(aclXattr('user::rwx\nuser:1234:r-x\ngroup::r-x\nother::---\n', 'default', 'd', noNames), kernelValue(d, 'system.posix_acl_default'), 'a default ACL without a mask gets the one setfacl computes');
  t.equal(aclXattr('user::rw-\ngroup::r--\nother::r--\n', 'access', 'f', noNames), undefined, 'an access ACL of the mode alone is no xattr (the kernel keeps none)');
  t.equal(aclXattr('', 'default', 'd', noNames), undefined, 'an empty default ACL is none');
  t.throws(() => aclXattr('user::rw-,user:nobody-here:r--,group::r--,other::r--', 'access', 'x', noNames), /names user "nobody-here", which has no id here/);
  t.throws(() => aclXattr('user::rw-,group::r--', 'access', 'x', noNames), /has 0 other:: entries/);
  t.throws(() => aclXattr('user::rw-,user:5:r,user:5:w,group::r--,other::r--', 'access', 'x', noNames), /names user 5 twice/);
  t.throws(() => aclXattr('user::rwz,group::r--,other::r--', 'access', 'x', noNames), /not a set of permissions/);
});

let world: World;
t.test('an archive made with tar --acls: getfacl through the mounted image shows the ACLs, ids mapped as owners are', async (t) => {
  world = await importWorld(['alice']);
  t.teardown(() => world.teardown());
  const tree = join(world.scratch, 'acl-tree');
  mkdirSync(join(tree, 'shared'), { recursive: true });
  writeFileSync(join(tree, 'shared', 'notes'), 'for 1234 and group 2345\n');
  chownSync(join(tree, 'shared', 'notes'), 1234, 1234);
  execFileSync('setfacl', ['-m', 'u:1234:rw,u:4321:r,g:2345:r', join(tree, 'shared', 'notes')]);
  execFileSync('setfacl', ['-d', '-m', 'u:4321:rwx', join(tree, 'shared')]);
  const tar = join(world.scratch, 'acl.tar');
  execFileSync('tar', ['--format=posix', '--acls', '--sort=name', '--numeric-owner', '-C', tree, '-cf', tar, '.']);
  execFileSync('chmod', ['-R', 'a+rX', world.scratch]);
  const cli = cliAs(world, 'alice');
  const add = await cli(['image', 'add', tar, '--name', 'acl', '--json']);
  t.equal(add.code, 0, `image add exits 0${add.code ? `: ${add.stderr}` : ''}`);
  t.same(JSON.parse(add.stdout).ignored, {}, 'nothing of the archive was dropped');
  t.notMatch(add.stderr, /warning/, 'and no warning about ACLs');
  const mnt = join(world.dirs.alice!, 'mnt');
  const run = await cli(['run', '--image', `acl:${mnt}`, '--', 'sh', '-c', `cd ${mnt}/shared && stat -c '%u:%g' notes && getfacl -n -p notes && getfacl -n -p -d .`]);
  t.equal(run.code, 0, `run exits 0${run.code ? `: ${run.stderr}` : ''}`);
  const [owner, ...rest] = run.stdout.trim().split('\n');
  t.equal(owner, '1234:1234', 'the owner, as the archive has it (the image\'s ids, seen in the namespace of the run)');
  // getfacl -d prints the directory's default ACL as plain entries, after "# file: .".
  const [access, defaults] = rest.join('\n').split('# file: .');
  t.same(access!.split('\n').filter((l) => l && !l.startsWith('#')), ['user::rw-', 'user:1234:rw-', 'user:4321:r--', 'group::r--', 'group:2345:r--', 'mask::rw-', 'other::r--'], 'the access ACL, every entry');
  t.same(defaults!.split('\n').filter((l) => l && !l.startsWith('#')), ['user::rwx', 'user:4321:rwx', 'group::r-x', 'mask::rwx', 'other::r-x'], 'the default ACL, every entry');
  const out = join(world.dirs.alice!, 'acl.out.tar');
  const exp = await cli(['image', 'export-layer', 'acl', '0'], out);
  t.equal(exp.code, 0, `export-layer exits 0${exp.code ? `: ${exp.stderr}` : ''}`);
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  t.equal(sha(readFileSync(out)), sha(readFileSync(tar)), 'the archive, byte for byte');
});
