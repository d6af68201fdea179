// The policy in force. The executor (root) reads the policy file's text, at
// start and on SIGHUP, and hands it to the front, which validates it here: a
// text that fails validation is refused, its errors logged, and the policy in
// force stays. A missing file means the built-in default at start; on reload
// it is refused too, so deleting the file never opens the broker up.
import { readFileSync } from 'node:fs';
import { defaultPolicy } from '../policy/default.js';
import type { Policy } from '../schema/types.generated.js';
import { formatIssues, parseAndValidate } from '../schema/validate.js';

export type LoadResult = { ok: true; policy: Policy; source: string } | { ok: false; errors: string[] };

/** What reading the policy file gave: its text, no file, or why it could not be read. */
export type PolicyText = { text: string } | { missing: true } | { error: string };

export function readPolicyText(path: string): PolicyText {
  try {
    return { text: readFileSync(path, 'utf8') };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { missing: true };
    return { error: `cannot read ${path}: ${(err as Error).message}` };
  }
}

/** Validates a policy file's content; `missing` says what no file means (the default at start, an error on reload). */
export function policyFrom(read: PolicyText, path: string, missing: 'default' | 'error'): LoadResult {
  if ('error' in read) return { ok: false, errors: [read.error] };
  if ('missing' in read) {
    return missing === 'default'
      ? { ok: true, policy: defaultPolicy, source: 'built-in default (no policy file)' }
      : { ok: false, errors: [`${path} does not exist any more; a reload needs a valid policy file`] };
  }
  const result = parseAndValidate('policy', read.text);
  if (!result.ok) return { ok: false, errors: formatIssues(result.issues).map((l) => `${path}: ${l}`) };
  return { ok: true, policy: result.value, source: path };
}

export function loadPolicyFile(path: string, missing: 'default' | 'error' = 'default'): LoadResult {
  return policyFrom(readPolicyText(path), path, missing);
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

  /** Applies a re-read of the file; on anything but a valid file keeps the policy in force and returns the errors. */
  reload(read: PolicyText): LoadResult {
    const result = policyFrom(read, this.path, 'error');
    if (result.ok) {
      this.current = result.policy;
      this.source = result.source;
    }
    return result;
  }
}
