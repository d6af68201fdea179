// openPathNoSymlinks and its hand walk (used where a seccomp filter refuses
// openat2, as systemd's RestrictSUIDSGID= does) agree: the same file, and the
// same refusals of symlinks anywhere on the way.
import t from 'tap';
import { fstatSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { close, openPathNoSymlinks, openPathNoSymlinksByWalk } from '../../src/sys/syscalls.js';

const dir = mkdtempSync(join(tmpdir(), 'mountgate-openpath.'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
mkdirSync(join(dir, 'a/b'), { recursive: true });
writeFileSync(join(dir, 'a/b/file'), 'x');
symlinkSync('b', join(dir, 'a/link-dir'));
symlinkSync('file', join(dir, 'a/b/link-file'));

const code = (fn: () => number): string => {
  try {
    const fd = fn();
    close(fd);
    return 'ok';
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
};

for (const [name, open] of [['openat2', openPathNoSymlinks], ['walk', openPathNoSymlinksByWalk]] as const) {
  t.test(name, async (t) => {
    const fd = open(join(dir, 'a/b/file'));
    t.equal(fstatSync(fd).ino, statSync(join(dir, 'a/b/file')).ino, 'opens the named file');
    close(fd);
    t.equal(code(() => open(join(dir, 'a/b'))), 'ok', 'opens a directory');
    const link = open(join(dir, 'a/b/link-file'));
    t.ok(fstatSync(link).isSymbolicLink(), 'a symlink as the last component: the link itself, not its target');
    close(link);
    t.match(code(() => open(join(dir, 'a/link-dir/file'))), /^(ELOOP|ENOTDIR)$/, 'a symlink on the way: refused');
    t.equal(code(() => open(join(dir, 'a/missing'))), 'ENOENT', 'a missing file: ENOENT');
  });
}

t.test('the walk refuses what it cannot check component by component', async (t) => {
  t.equal(code(() => openPathNoSymlinksByWalk(`${dir}/a/../a/b/file`)), 'EINVAL', '".." is refused');
  t.equal(code(() => openPathNoSymlinksByWalk('a/b/file')), 'EINVAL', 'a relative path is refused');
});
