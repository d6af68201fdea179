// What a schema validator's errors become: one issue per problem, each a JSON
// pointer and a sentence a person can act on.
import type { ErrorObject, ValidateFunction } from 'ajv';

export interface ValidationIssue {
  /** JSON pointer to the offending value ("" is the document itself). */
  pointer: string;
  /** A sentence a person can act on. */
  message: string;
}

export type ValidationResult<T> = { ok: true; value: T } | { ok: false; issues: ValidationIssue[] };

function describe(e: ErrorObject): string {
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'additionalProperties':
      return `unknown field "${String(p.additionalProperty)}": remove it (fields are checked strictly)`;
    case 'required':
      return `missing required field "${String(p.missingProperty)}"`;
    case 'type':
      return `must be of type ${String(p.type)}`;
    case 'const':
      return `must be ${JSON.stringify(p.allowedValue)}`;
    case 'enum':
      return `must be one of ${(p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      return `must be ${String(p.comparison)} ${String(p.limit)}`;
    case 'maxItems':
      return `has too many items: at most ${String(p.limit)} allowed`;
    case 'minItems':
      return `has too few items: at least ${String(p.limit)} required`;
    case 'maxLength':
      return `is too long: at most ${String(p.limit)} characters`;
    case 'minLength':
      return `is too short: at least ${String(p.limit)} characters`;
    case 'pattern':
      return `does not match the pattern ${String(p.pattern)}`;
    default:
      return e.message ?? `fails the "${e.keyword}" rule`;
  }
}

export function issuesOf(errors: ErrorObject[] | null | undefined): ValidationIssue[] {
  const seen = new Set<string>();
  const out: ValidationIssue[] = [];
  // Where branches of an anyOf want different types ("text or bytes"): one issue
  // naming every type, or none when a branch of the right type said more.
  const types = new Map<string, string[]>();
  const specific = new Set<string>();
  for (const e of errors ?? []) {
    if (e.keyword === 'type') {
      const list = types.get(e.instancePath) ?? [];
      list.push(String((e.params as { type?: unknown }).type));
      types.set(e.instancePath, list);
    } else if (e.keyword !== 'oneOf' && e.keyword !== 'anyOf' && e.keyword !== 'if') specific.add(e.instancePath);
  }
  for (const e of errors ?? []) {
    // oneOf/anyOf wrappers repeat what their branches already said.
    if (e.keyword === 'oneOf' || e.keyword === 'anyOf' || e.keyword === 'if') continue;
    let message = describe(e);
    if (e.keyword === 'type') {
      const wanted = types.get(e.instancePath)!;
      if (wanted.length > 1 && specific.has(e.instancePath)) continue;
      if (wanted.length > 1) message = `must be of type ${[...new Set(wanted)].join(' or ')}`;
    }
    const issue = { pointer: e.instancePath, message };
    const key = `${issue.pointer}\0${issue.message}`;
    if (!seen.has(key)) {
      seen.add(key);
      out.push(issue);
    }
  }
  return out;
}

/** Runs a compiled validator; the value comes back typed when it is valid. */
export function runValidator<T>(fn: ValidateFunction, value: unknown): ValidationResult<T> {
  if (fn(value)) return { ok: true, value: value as T };
  return { ok: false, issues: issuesOf(fn.errors) };
}

/** One line per issue, "pointer: message", with "(document)" for the root. */
export function formatIssues(issues: ValidationIssue[]): string[] {
  return issues.map((i) => `${i.pointer === '' ? '(document)' : i.pointer}: ${i.message}`);
}

