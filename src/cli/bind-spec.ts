// Parsing of `--bind SRC:DST[:OPTIONS]`, pure.
//   OPTIONS, comma separated: ro, noexec, owner=N (your files appear as uid
//   and gid N inside), uid=N, gid=N.
export interface BindSpec {
  source: string;
  target: string;
  readOnly: boolean;
  noexec: boolean;
  /** Namespace uid under which your own files should appear (default: identity map). */
  uid?: number;
  gid?: number;
}

export function parseBindSpec(text: string): BindSpec {
  const parts = text.split(':');
  if (parts.length < 2 || parts.length > 3 || !parts[0] || !parts[1]) {
    throw new Error(`--bind ${text}: expected SRC:DST or SRC:DST:OPTIONS (e.g. ~/src:/src:ro,owner=1000)`);
  }
  const [source, target, options = ''] = parts as [string, string, string?];
  if (!target.startsWith('/')) throw new Error(`--bind ${text}: the target ${target} must be an absolute path`);
  const spec: BindSpec = { source, target, readOnly: false, noexec: false };
  for (const opt of options.split(',').filter(Boolean)) {
    const [key, value] = opt.split('=', 2) as [string, string?];
    const id = () => {
      if (value === undefined || !/^\d{1,10}$/.test(value)) throw new Error(`--bind ${text}: ${key}= takes a numeric id`);
      return Number(value);
    };
    switch (key) {
      case 'ro': spec.readOnly = true; break;
      case 'rw': spec.readOnly = false; break;
      case 'noexec': spec.noexec = true; break;
      case 'owner': spec.uid = id(); spec.gid = spec.uid; break;
      case 'uid': spec.uid = id(); break;
      case 'gid': spec.gid = id(); break;
      default: throw new Error(`--bind ${text}: unknown option "${key}" (known: ro, rw, noexec, owner=N, uid=N, gid=N)`);
    }
  }
  return spec;
}
