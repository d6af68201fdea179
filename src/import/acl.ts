// POSIX ACLs as tar archives carry them (PAX SCHILY.acl.access and
// SCHILY.acl.default, the text form: GNU tar writes acl_to_text's lines,
// star and libarchive a comma-separated list whose named entries may end in
// the numeric id) into the xattrs the kernel keeps them in:
// system.posix_acl_access and system.posix_acl_default, in the kernel's
// binary form (struct posix_acl_xattr_header: le32 version 2, then per entry
// le16 tag, le16 perm, le32 id), entries in the order the kernel requires.
// The ids are the image's own ids, as its owners are: a mount maps both the
// same way. A name without its id is resolved as `tar -x --acls` would on
// this machine (the host's /etc/passwd and /etc/group).
import { readFileSync } from 'node:fs';
import { parseGroup, parsePasswd } from '../accounts/parse.js';
import { InvalidRequestError } from '../errors.js';

export const ACL_ACCESS_XATTR = 'system.posix_acl_access';
export const ACL_DEFAULT_XATTR = 'system.posix_acl_default';

const VERSION = 2;
const USER_OBJ = 0x01;
const USER = 0x02;
const GROUP_OBJ = 0x04;
const GROUP = 0x08;
const MASK = 0x10;
const OTHER = 0x20;
const UNDEFINED_ID = 0xffffffff;

/** Resolves a user or group name to its id (undefined when unknown). */
export interface AclNames {
  user(name: string): number | undefined;
  group(name: string): number | undefined;
}

let host: { users: Map<string, number>; groups: Map<string, number> } | undefined;
/** The host's names, read once, when an archive first names one. */
export const hostNames: AclNames = {
  user: (name) => hostTables().users.get(name),
  group: (name) => hostTables().groups.get(name),
};

function hostTables() {
  const read = (path: string) => {
    try {
      return readFileSync(path, 'utf8');
    } catch {
      return '';
    }
  };
  host ??= {
    users: new Map(parsePasswd(read('/etc/passwd')).map((e) => [e.name, e.uid])),
    groups: new Map(parseGroup(read('/etc/group')).map((e) => [e.name, e.gid])),
  };
  return host;
}

interface AclEntry {
  tag: number;
  perm: number;
  id: number;
}

const tags: Record<string, number> = { user: USER_OBJ, u: USER_OBJ, group: GROUP_OBJ, g: GROUP_OBJ, mask: MASK, m: MASK, other: OTHER, o: OTHER };

function perms(text: string, what: string): number {
  let p = 0;
  for (const c of text) {
    if (c === 'r') p |= 4;
    else if (c === 'w') p |= 2;
    else if (c === 'x') p |= 1;
    else if (c !== '-') throw new InvalidRequestError(`${what}: "${text}" is not a set of permissions (r, w, x, -)`);
  }
  return p;
}

/**
 * The binary xattr value of an ACL in text form, or undefined when it holds
 * nothing beyond the file's mode (an access ACL of the three base entries,
 * which the kernel keeps as the mode alone) or nothing at all.
 */
export function aclXattr(text: string, kind: 'access' | 'default', what: string, names: AclNames = hostNames): Buffer | undefined {
  const entries: AclEntry[] = [];
  for (const raw of text.split(/[,\n]/)) {
    const item = raw.replace(/#.*$/, '').trim();
    if (item === '') continue;
    const f = item.split(':').map((s) => s.trim());
    // "default:" before an entry: a default ACL written with the access one (getfacl style).
    if (f[0] === 'default' || f[0] === 'd') f.shift();
    const base = tags[f[0] ?? ''];
    if (base === undefined || f.length < 3 || f.length > 4) throw new InvalidRequestError(`${what}: "${item}" is not an ACL entry (tag:qualifier:permissions)`);
    const qualifier = f[1]!;
    const perm = perms(f[2]!, what);
    if (qualifier === '') {
      entries.push({ tag: base, perm, id: UNDEFINED_ID });
      continue;
    }
    if (base !== USER_OBJ && base !== GROUP_OBJ) throw new InvalidRequestError(`${what}: "${item}": a ${f[0]} entry names no one`);
    const tag = base === USER_OBJ ? USER : GROUP;
    // An id given after the permissions (star, libarchive) wins over the name.
    const given = f[3] ?? (/^\d+$/.test(qualifier) ? qualifier : undefined);
    let id: number | undefined = given !== undefined && /^\d+$/.test(given) ? Number(given) : undefined;
    if (id === undefined && given !== undefined) throw new InvalidRequestError(`${what}: "${item}": "${given}" is not a numeric id`);
    id ??= tag === USER ? names.user(qualifier) : names.group(qualifier);
    if (id === undefined || id > 0xfffffffe) throw new InvalidRequestError(`${what}: "${item}" names ${tag === USER ? 'user' : 'group'} "${qualifier}", which has no id here; archive with numeric ids (star, bsdtar) or make the name known`);
    entries.push({ tag, perm, id });
  }
  if (entries.length === 0) return undefined;
  const count = (tag: number) => entries.filter((e) => e.tag === tag).length;
  for (const [tag, name] of [[USER_OBJ, 'user::'], [GROUP_OBJ, 'group::'], [OTHER, 'other::']] as const) {
    if (count(tag) !== 1) throw new InvalidRequestError(`${what}: the ${kind} ACL has ${count(tag)} ${name} entries; it needs exactly one`);
  }
  if (count(MASK) > 1) throw new InvalidRequestError(`${what}: the ${kind} ACL has ${count(MASK)} mask entries`);
  const named = entries.filter((e) => e.tag === USER || e.tag === GROUP);
  if (named.length === 0 && count(MASK) === 0 && kind === 'access') return undefined;
  // Named entries need a mask; without one, the union of the group class, as setfacl computes it.
  if (named.length > 0 && count(MASK) === 0) {
    entries.push({ tag: MASK, perm: entries.filter((e) => e.tag === USER || e.tag === GROUP || e.tag === GROUP_OBJ).reduce((p, e) => p | e.perm, 0), id: UNDEFINED_ID });
  }
  entries.sort((a, b) => a.tag - b.tag || a.id - b.id);
  for (let k = 1; k < entries.length; k++) {
    const [a, b] = [entries[k - 1]!, entries[k]!];
    if (a.tag === b.tag && a.id === b.id) throw new InvalidRequestError(`${what}: the ${kind} ACL names ${a.tag === USER ? 'user' : 'group'} ${a.id} twice`);
  }
  const out = Buffer.alloc(4 + entries.length * 8);
  out.writeUInt32LE(VERSION, 0);
  entries.forEach((e, k) => {
    out.writeUInt16LE(e.tag, 4 + k * 8);
    out.writeUInt16LE(e.perm, 6 + k * 8);
    out.writeUInt32LE(e.id, 8 + k * 8);
  });
  return out;
}
