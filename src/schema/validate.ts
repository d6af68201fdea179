// JSON Schema validation shared by the client and the broker: one ajv instance
// (strict, draft 2020-12) over the files in schemas/, and error messages that
// name the JSON pointer and say what to change. The schemas come as data
// (documents.generated.ts, derived from schemas/), so validating reads no file.
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import { schemaDocuments } from './documents.generated.js';
import type { BindRequest, Manifest, MountRequest, Policy } from './types.generated.js';

export const schemaKinds = ['manifest', 'bind-request', 'mount-request', 'policy'] as const;
export type SchemaKind = (typeof schemaKinds)[number];

export interface SchemaTypes {
  'bind-request': BindRequest;
  'mount-request': MountRequest;
  policy: Policy;
  manifest: Manifest;
}

export interface ValidationIssue {
  /** JSON pointer to the offending value ("" is the document itself). */
  pointer: string;
  /** A sentence a person can act on. */
  message: string;
}

export type ValidationResult<T> = { ok: true; value: T } | { ok: false; issues: ValidationIssue[] };

let ajv: Ajv2020 | undefined;
const compiled = new Map<SchemaKind, ValidateFunction>();

function schemaId(kind: SchemaKind): string {
  return `https://mountgate.dev/schemas/${kind}.schema.json`;
}

function instance(): Ajv2020 {
  if (ajv) return ajv;
  ajv = new Ajv2020({ strict: true, allErrors: true, allowUnionTypes: false });
  for (const file of Object.keys(schemaDocuments).sort()) ajv.addSchema(structuredClone(schemaDocuments[file]) as object);
  return ajv;
}

function validator(kind: SchemaKind): ValidateFunction {
  let fn = compiled.get(kind);
  if (!fn) {
    fn = instance().getSchema(schemaId(kind));
    if (!fn) throw new Error(`mountgate: no schema for ${kind} in schemas/`);
    compiled.set(kind, fn);
  }
  return fn;
}

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

function issuesOf(errors: ErrorObject[] | null | undefined): ValidationIssue[] {
  const seen = new Set<string>();
  const out: ValidationIssue[] = [];
  for (const e of errors ?? []) {
    // oneOf/anyOf wrappers repeat what their branches already said.
    if (e.keyword === 'oneOf' || e.keyword === 'anyOf' || e.keyword === 'if') continue;
    const issue = { pointer: e.instancePath, message: describe(e) };
    const key = `${issue.pointer}\0${issue.message}`;
    if (!seen.has(key)) {
      seen.add(key);
      out.push(issue);
    }
  }
  return out;
}

/** Validates a parsed JSON value against one of the schemas. */
export function validate<K extends SchemaKind>(kind: K, value: unknown): ValidationResult<SchemaTypes[K]> {
  const fn = validator(kind);
  if (fn(value)) return { ok: true, value: value as SchemaTypes[K] };
  return { ok: false, issues: issuesOf(fn.errors) };
}

/** Parses JSON text and validates it; a parse error is reported at pointer "". */
export function parseAndValidate<K extends SchemaKind>(kind: K, text: string): ValidationResult<SchemaTypes[K]> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { ok: false, issues: [{ pointer: '', message: `is not valid JSON: ${(err as Error).message}` }] };
  }
  return validate(kind, value);
}

/** One line per issue, "pointer: message", with "(document)" for the root. */
export function formatIssues(issues: ValidationIssue[]): string[] {
  return issues.map((i) => `${i.pointer === '' ? '(document)' : i.pointer}: ${i.message}`);
}

/** Guesses the schema of a document from its shape, for `mountgate validate` without --kind. */
export function guessKind(value: unknown): SchemaKind | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const v = value as Record<string, unknown>;
  if ('entries' in v) return 'manifest';
  if ('methods' in v || 'limits' in v || 'deniedSources' in v || ('version' in v && Object.keys(v).length === 1)) return 'policy';
  return undefined;
}
