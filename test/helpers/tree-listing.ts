// Trees compared entry by entry as the kernel shows them: the listing of
// test/helpers/tree-listing.mjs (run as root on a source tree, and as a test
// user on a mounted image), and the differences between two listings.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { pkgRoot } from './paths.js';

export interface Listed {
  path: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  /** "seconds.nanoseconds" */
  mtime: string;
  ino: string;
  nlink: number;
  /** name -> value in hex */
  xattrs: Record<string, string>;
  size?: number;
  /** hex */
  target?: string;
  sha256?: string;
}

/** The script, at a path a test user can read. */
export const listingScript = join(pkgRoot, 'test', 'helpers', 'tree-listing.mjs');

/** Lists `dir` as the current (root) process sees it. */
export function listTree(dir: string): Promise<Listed[]> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [listingScript, dir], { maxBuffer: 256 << 20, env: { ...process.env, NODE_OPTIONS: '' } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`tree-listing ${dir}: ${stderr || err.message}`));
      else resolve(JSON.parse(stdout) as Listed[]);
    });
  });
}

export interface Expect {
  /** 's': the archive keeps whole seconds (gnu, ustar): compare those. */
  mtime: 'ns' | 's';
  /** false: the archive keeps no xattrs, so the image must have none. */
  xattrs: boolean;
}

/** For every path, the other paths of its hardlink group (non-directories sharing an inode). */
function linkGroups(list: Listed[]): Map<string, string> {
  const byIno = new Map<string, string[]>();
  for (const e of list) if (e.type !== 'dir') byIno.set(e.ino, [...(byIno.get(e.ino) ?? []), e.path]);
  const out = new Map<string, string>();
  for (const paths of byIno.values()) for (const p of paths) out.set(p, paths.filter((q) => q !== p).join(','));
  return out;
}

/**
 * What differs between the listing of an image (`got`) and of its source
 * (`want`): type, mode, owner, size, mtime, xattrs, symlink target, contents,
 * link count and hardlink group of every entry, and entries only one has.
 * Directory sizes and link counts are the filesystem's own, not compared.
 */
export function differences(got: Listed[], want: Listed[], expect: Expect): string[] {
  const out: string[] = [];
  const g = new Map(got.map((e) => [e.path, e]));
  const w = new Map(want.map((e) => [e.path, e]));
  for (const p of w.keys()) if (!g.has(p)) out.push(`${p}: missing from the image`);
  for (const p of g.keys()) if (!w.has(p)) out.push(`${p}: in the image, not in the source`);
  const gLinks = linkGroups(got);
  const wLinks = linkGroups(want);
  const mtime = (m: string) => (expect.mtime === 's' ? m.split('.')[0]! : m);
  for (const [p, a] of g) {
    const b = w.get(p);
    if (!b) continue;
    const fields: [string, unknown, unknown][] = [
      ['type', a.type, b.type],
      ['mode', a.mode.toString(8), b.mode.toString(8)],
      ['owner', `${a.uid}:${a.gid}`, `${b.uid}:${b.gid}`],
      ['mtime', mtime(a.mtime), mtime(b.mtime)],
      ['xattrs', JSON.stringify(a.xattrs), JSON.stringify(expect.xattrs ? b.xattrs : {})],
    ];
    if (b.type !== 'dir') {
      fields.push(['size', a.size, b.size], ['links', a.nlink, b.nlink], ['hardlinked with', gLinks.get(p), wLinks.get(p)]);
    }
    if (b.type === 'symlink') fields.push(['target', Buffer.from(a.target ?? '', 'hex').toString(), Buffer.from(b.target ?? '', 'hex').toString()]);
    if (b.type === 'file') fields.push(['contents (sha256)', a.sha256, b.sha256]);
    for (const [what, x, y] of fields) if (x !== y) out.push(`${p}: ${what} ${String(x)}, the source has ${String(y)}`);
  }
  return out;
}
