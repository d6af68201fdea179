// Pure parsers for the account files the policy depends on: /etc/passwd,
// /etc/group, /etc/subuid and /etc/subgid. No I/O here; see load.ts.

export interface PasswdEntry { name: string; uid: number; gid: number; home: string }
export interface GroupEntry { name: string; gid: number; members: string[] }
/** One line of /etc/subuid or /etc/subgid; owner is a name or a numeric id. */
export interface SubIdEntry { owner: string; start: number; count: number }

const maxId = 4294967294;

function parseId(text: string | undefined): number | undefined {
  if (text === undefined || !/^\d{1,10}$/.test(text)) return undefined;
  const n = Number(text);
  return n <= maxId ? n : undefined;
}

function lines(text: string): string[][] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => l.split(':'));
}

export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const f of lines(text)) {
    const uid = parseId(f[2]);
    const gid = parseId(f[3]);
    if (!f[0] || uid === undefined || gid === undefined) continue;
    out.push({ name: f[0], uid, gid, home: f[5] ?? '' });
  }
  return out;
}

export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const f of lines(text)) {
    const gid = parseId(f[2]);
    if (!f[0] || gid === undefined) continue;
    out.push({ name: f[0], gid, members: (f[3] ?? '').split(',').filter((m) => m !== '') });
  }
  return out;
}

/** Lines that are malformed, or whose range would run past the largest id, are skipped. */
export function parseSubIds(text: string): SubIdEntry[] {
  const out: SubIdEntry[] = [];
  for (const f of lines(text)) {
    const start = parseId(f[1]);
    const count = parseId(f[2]);
    if (!f[0] || start === undefined || count === undefined || count === 0) continue;
    if (start + count - 1 > maxId) continue;
    out.push({ owner: f[0], start, count });
  }
  return out;
}

/** The ranges of one user, matched by name or by numeric uid, as newuidmap does. */
export function subIdsOf(entries: SubIdEntry[], name: string, id: number): { start: number; count: number }[] {
  return entries
    .filter((e) => e.owner === name || e.owner === String(id))
    .map(({ start, count }) => ({ start, count }));
}

/** Group names of a user: its primary group and every group listing it as a member. */
export function groupsOf(groups: GroupEntry[], user: PasswdEntry): string[] {
  const names = new Set<string>();
  for (const g of groups) {
    if (g.gid === user.gid || g.members.includes(user.name)) names.add(g.name);
  }
  return [...names].sort();
}

/** Where the system's own accounts end: the first uid and gid of a user account (login.defs' UID_MIN and GID_MIN). */
export interface IdFloor {
  uid: number;
  gid: number;
}

/** UID_MIN and GID_MIN of a login.defs text; 1000 (shadow's default) for what it does not set. */
export function parseIdFloor(text: string): IdFloor {
  const value = (key: string) => {
    const m = new RegExp(`^\\s*${key}\\s+(\\d+)\\s*$`, 'm').exec(text);
    return m ? Number(m[1]) : 1000;
  };
  return { uid: value('UID_MIN'), gid: value('GID_MIN') };
}
