// JSON Schema validation shared by the client and the broker, with error
// messages that name the JSON pointer and say what to change. Each schema's
// validator is compiled ahead of time from schemas/ (validate-KIND.generated.ts,
// by scripts/gen-types.mjs, with the options strict, allErrors, draft 2020-12),
// so validating reads no file and no process compiles a schema when it starts.
import type { ValidateFunction } from 'ajv';
import { validate as bindRequest } from './validate-bind-request.generated.js';
import { validate as manifest } from './validate-manifest.generated.js';
import { validate as mountRequest } from './validate-mount-request.generated.js';
import { validate as policy } from './validate-policy.generated.js';
import { validate as removeRequest } from './validate-remove-request.generated.js';
import { runValidator, type ValidationResult } from './issues.js';
import type { SchemaKind } from './kinds.js';
import type { BindRequest, Manifest, MountRequest, Policy, RemoveRequest } from './types.generated.js';

export { formatIssues, type ValidationIssue, type ValidationResult } from './issues.js';

export { schemaKinds, type SchemaKind } from './kinds.js';

export interface SchemaTypes {
  'bind-request': BindRequest;
  'mount-request': MountRequest;
  'remove-request': RemoveRequest;
  policy: Policy;
  manifest: Manifest;
}

const validators: Record<SchemaKind, ValidateFunction> = {
  manifest: manifest as ValidateFunction,
  'bind-request': bindRequest as ValidateFunction,
  'mount-request': mountRequest as ValidateFunction,
  'remove-request': removeRequest as ValidateFunction,
  policy: policy as ValidateFunction,
};

/** Validates a parsed JSON value against one of the schemas. */
export function validate<K extends SchemaKind>(kind: K, value: unknown): ValidationResult<SchemaTypes[K]> {
  return runValidator(validators[kind], value);
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

/** Guesses the schema of a document from its shape, for `mountgate validate` without --kind. */
export function guessKind(value: unknown): SchemaKind | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const v = value as Record<string, unknown>;
  if ('entries' in v) return 'manifest';
  if ('methods' in v || 'limits' in v || 'deniedSources' in v || ('version' in v && Object.keys(v).length === 1)) return 'policy';
  return undefined;
}
