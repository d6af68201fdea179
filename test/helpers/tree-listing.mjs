// Lists a tree as the kernel shows it, one record per entry, as JSON on
// standard output: path, type, mode, owner, size, mtime (ns), symlink target,
// inode and link count (for hardlink groups), sha256 of the contents and
// every extended attribute (from getfattr, a tool of its own). Runs as root on
// a source tree and AS A TEST USER on a mounted image (inside `mountgate run`),
// so the two are read the same way. Node builtins only.
//   node tree-listing.mjs DIR
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

const root = process.argv[2];
const types = [['isFile', 'file'], ['isDirectory', 'dir'], ['isSymbolicLink', 'symlink'], ['isFIFO', 'fifo'], ['isSocket', 'socket'], ['isCharacterDevice', 'chardev'], ['isBlockDevice', 'blockdev']];
const entries = [];
const walk = (rel) => {
  const abs = rel === '.' ? root : join(root, rel);
  const st = lstatSync(abs, { bigint: true });
  const type = types.find(([m]) => st[m]())[1];
  const e = {
    path: rel,
    type,
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    mtime: `${st.mtimeNs / 1_000_000_000n}.${String(st.mtimeNs % 1_000_000_000n).padStart(9, '0')}`,
    ino: String(st.ino),
    nlink: Number(st.nlink),
    xattrs: {},
  };
  if (type !== 'dir') e.size = Number(st.size);
  if (type === 'symlink') e.target = readlinkSync(abs, 'buffer').toString('hex');
  if (type === 'file') e.sha256 = createHash('sha256').update(readFileSync(abs)).digest('hex');
  entries.push(e);
  if (type === 'dir') for (const n of readdirSync(abs).sort()) walk(rel === '.' ? n : `${rel}/${n}`);
};
walk('.');

// getfattr escapes bytes it will not print as \ooo.
const unescape = (s) => Buffer.from(s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8))), 'latin1').toString('utf8');
const byPath = new Map(entries.map((e) => [e.path, e]));
const dump = execFileSync('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '.'], { cwd: root, encoding: 'latin1', maxBuffer: 256 << 20 });
let current;
for (const line of dump.split('\n')) {
  const file = /^# file: (.*)$/.exec(line);
  if (file) {
    const p = unescape(file[1]).replace(/^\.\/?/, '');
    current = byPath.get(p === '' ? '.' : p);
    if (!current) throw new Error(`getfattr named ${p}, which the walk did not find`);
    continue;
  }
  if (line === '' || !current) continue;
  // An empty value prints as the name alone.
  const kv = /^([^=]+)(?:=0x([0-9a-f]*))?$/.exec(line);
  if (!kv) throw new Error(`getfattr printed ${JSON.stringify(line)}`);
  current.xattrs[unescape(kv[1])] = kv[2] ?? '';
}
process.stdout.write(JSON.stringify(entries));
