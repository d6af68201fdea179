// The policy in force: loaded from a file at start and on reload (SIGHUP). A
// file that fails validation is refused, its errors logged, and the last good
// policy stays; a missing file means the built-in default at start, and on
// reload keeps the policy in force.
import { readFileSync } from 'node:fs';
import { defaultPolicy } from '../policy/default.js';
import type { Policy } from '../schema/types.generated.js';
import { formatIssues, parseAndValidate } from '../schema/validate.js';

export type LoadResult = { ok: true; policy: Policy; source: string } | { ok: false; errors: string[] };

/**
 * Reads and validates the policy file. A missing file means the built-in
 * default only at start (`missing: 'default'`); on reload it is an error, so
 * a deleted file never switches the broker to the permissive default.
 */
export function loadPolicyFile(path: string, missing: 'default' | 'error' = 'default'): LoadResult {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && missing === 'default') return { ok: true, policy: defaultPolicy, source: 'built-in default (no policy file)' };
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { ok: false, errors: [`${path} does not exist any more; a reload needs a valid policy file`] };
    return { ok: false, errors: [`cannot read ${path}: ${(err as Error).message}`] };
  }
  const result = parseAndValidate('policy', text);
  if (!result.ok) return { ok: false, errors: formatIssues(result.issues).map((l) => `${path}: ${l}`) };
  return { ok: true, policy: result.value, source: path };
}

export class PolicyStore {
  private current: Policy;
  source: string;

  constructor(private readonly path: string, initial: { policy: Policy; source: string }) {
    this.current = initial.policy;
    this.source = initial.source;
  }

  get policy(): Policy {
    return this.current;
  }

  /** Re-reads the file; on anything but a valid file keeps the policy in force and returns the errors. */
  reload(): LoadResult {
    const result = loadPolicyFile(this.path, 'error');
    if (result.ok) {
      this.current = result.policy;
      this.source = result.source;
    }
    return result;
  }
}
