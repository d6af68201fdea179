// Turning untrusted JSON into a checked Manifest: a size limit, the JSON
// Schema (shared with the broker), then the semantic checks. Schema issues of
// an entry are narrowed to the kind of entry its "type" names, so a user reads
// "missing required field size" rather than one complaint per entry kind.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { schemasDir } from '../paths.js';
import { validate, type ValidationIssue } from '../schema/validate.js';
import type { Manifest } from '../schema/types.generated.js';
import { checkManifest } from './check.js';
import { InvalidManifestError } from './errors.js';
import { MAX_MANIFEST_BYTES } from './limits.js';

export { InvalidManifestError } from './errors.js';
export { checkManifest } from './check.js';

interface EntryShape {
  required: string[];
  properties: Set<string>;
}

let entryShapes: Map<string, EntryShape> | undefined;

/** Which fields each entry type requires and allows, read from the schema itself. */
function shapes(): Map<string, EntryShape> {
  if (entryShapes) return entryShapes;
  const schema = JSON.parse(readFileSync(join(schemasDir, 'manifest.schema.json'), 'utf8')) as {
    $defs: Record<string, { required?: string[]; properties?: Record<string, { const?: string }> }>;
  };
  entryShapes = new Map();
  for (const def of Object.values(schema.$defs)) {
    const type = def.properties?.type?.const;
    if (type) entryShapes.set(type, { required: def.required ?? [], properties: new Set(Object.keys(def.properties ?? {})) });
  }
  return entryShapes;
}

const entryPointer = /^\/entries\/(\d+)(?:\/([^/]+))?/;

/** Keeps only the issues that the branch of the entry's own type raised. */
function narrowIssues(value: unknown, issues: ValidationIssue[]): ValidationIssue[] {
  const entries = (value as { entries?: unknown[] } | null)?.entries;
  if (!Array.isArray(entries)) return issues;
  const out: ValidationIssue[] = [];
  for (const issue of issues) {
    const m = entryPointer.exec(issue.pointer);
    const entry = m ? (entries[Number(m[1])] as { type?: unknown } | undefined) : undefined;
    const shape = typeof entry?.type === 'string' ? shapes().get(entry.type) : undefined;
    if (!m || !shape) {
      out.push(issue);
      continue;
    }
    const field = m[2];
    if (field === 'type' && issue.message.startsWith('must be "')) continue;
    if (field !== undefined && !shape.properties.has(field)) continue;
    const missing = /^missing required field "(.+)"$/.exec(issue.message);
    if (missing && !shape.required.includes(missing[1]!)) continue;
    const unknown = /^unknown field "(.+?)"/.exec(issue.message);
    if (unknown && shape.properties.has(unknown[1]!)) continue;
    out.push(issue);
  }
  return out.length > 0 ? out : issues;
}

function entryTypeIssue(value: unknown): ValidationIssue | undefined {
  const entries = (value as { entries?: unknown[] } | null)?.entries;
  if (!Array.isArray(entries)) return undefined;
  const kinds = [...shapes().keys()];
  for (let i = 0; i < entries.length; i++) {
    const t = (entries[i] as { type?: unknown } | null)?.type;
    if (typeof t !== 'string' || !shapes().has(t)) {
      return { pointer: `/entries/${i}/type`, message: `must be one of ${kinds.map((k) => JSON.stringify(k)).join(', ')}` };
    }
  }
  return undefined;
}

/** Validates a parsed JSON value; throws InvalidManifestError at the first problem. */
export function validateManifest(value: unknown): Manifest {
  const result = validate('manifest', value);
  if (!result.ok) {
    const typeIssue = entryTypeIssue(value);
    const issue = typeIssue ?? narrowIssues(value, result.issues)[0]!;
    throw new InvalidManifestError(issue.message, issue.pointer === '' ? '(document)' : issue.pointer);
  }
  checkManifest(result.value);
  return result.value;
}

/** Parses and validates manifest JSON text. */
export function parseManifest(text: string | Buffer): Manifest {
  const size = typeof text === 'string' ? Buffer.byteLength(text) : text.length;
  if (size > MAX_MANIFEST_BYTES) throw new InvalidManifestError(`the manifest is ${size} bytes, at most ${MAX_MANIFEST_BYTES}`, '(document)');
  let value: unknown;
  try {
    value = JSON.parse(typeof text === 'string' ? text : text.toString('utf8'));
  } catch (err) {
    throw new InvalidManifestError(`is not valid JSON: ${(err as Error).message}`, '(document)');
  }
  return validateManifest(value);
}
