// Turning untrusted JSON into a checked Manifest: a size limit, the JSON
// Schema (shared with the broker), then the semantic checks. Schema issues of
// an entry are narrowed to the kind of entry its "type" names, so a user reads
// "missing required field size" rather than one complaint per entry kind.
//
// Speed: the schema says an entry is oneOf nine kinds, and a validator that
// follows it literally tries every entry against all nine and builds errors
// for the eight that fail. Each kind requires its own constant "type", so an
// entry matches the oneOf exactly when it matches the kind its type names:
// the fast check validates each entry against that kind only, with validators
// compiled from the same schema file at build time (scripts/gen-types.mjs,
// which refuses a schema whose kinds are not told apart so). Only a document it refuses goes through
// the full schema again, which then supplies the messages.
import { isAscii, isUtf8 } from 'node:buffer';
import { schemaDocuments } from '../schema/documents.generated.js';
import * as kindValidators from '../schema/validate-manifest-kinds.generated.js';
import { validate, type ValidationIssue } from '../schema/validate.js';
import type { Entry, Manifest } from '../schema/types.generated.js';
import { checkEntryEncodable, checkManifest, type CheckedManifest, type EntryChecker } from './check.js';
import { InvalidManifestError } from './errors.js';
import { MAX_ENTRIES, MAX_MANIFEST_BYTES } from './limits.js';

export { InvalidManifestError } from './errors.js';

/** The fast check's validators (generated: the module has no types). */
const byKind = kindValidators as unknown as {
  document: (value: unknown) => boolean;
  kinds: Map<string, (value: unknown) => boolean>;
};
export { checkManifest, type CheckedManifest } from './check.js';

/** schemas/manifest.schema.json, a fresh copy (as a parse of the file would give). */
function manifestSchema(): unknown {
  return structuredClone(schemaDocuments['manifest.schema.json']);
}

interface EntryShape {
  required: string[];
  properties: Set<string>;
}

let entryShapes: Map<string, EntryShape> | undefined;

/** Which fields each entry type requires and allows, read from the schema itself. */
function shapes(): Map<string, EntryShape> {
  if (entryShapes) return entryShapes;
  const schema = manifestSchema() as {
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

/** The schema's verdict, each entry checked against its own kind only. */
function passesSchemaByKind(value: unknown): boolean {
  if (!byKind.document(value)) return false;
  for (const entry of (value as { entries: unknown[] }).entries) if (!entryPassesSchema(entry)) return false;
  return true;
}

/** Whether one parsed entry passes the schema (against the kind its type names). */
export function entryPassesSchema(entry: unknown): boolean {
  const type = (entry as { type?: unknown } | null)?.type;
  const check = typeof type === 'string' ? byKind.kinds.get(type) : undefined;
  return check !== undefined && check(entry);
}

/**
 * The checks the streaming build makes of parsed entry i, the one after the
 * last `checker` checked (text codec): the schema of its kind, the encodings,
 * EntryChecker. The index of its directory, or undefined when the streaming
 * path must give up (the whole-manifest path then words the problem); throws
 * InvalidManifestError for what EntryChecker refuses.
 */
export function checkStreamedEntry(checker: EntryChecker, value: unknown, i: number): number | undefined {
  if (!entryPassesSchema(value)) return undefined;
  const entry = value as Entry;
  if (checkEntryEncodable(entry, i)) return undefined; // bytes: the codec is binary
  const parent = checker.check(entry, i);
  return checker.tight ? undefined : parent;
}

/**
 * Whether a manifest's members other than its entries pass the schema: `head`
 * holds them; its `count` entries are checked one by one (entryPassesSchema).
 */
export function headPassesSchema(head: Record<string, unknown>, count: number): boolean {
  // Of "entries", the document's validator asks only for an array of 1 to maxItems (MAX_ENTRIES) items.
  return count >= 1 && count <= MAX_ENTRIES && byKind.document({ ...head, entries: [null] });
}

/**
 * The document the full schema is run on to word the first problem: only the
 * first entry that fails its kind (at its own index in the pointers), so a
 * manifest of a million bad entries costs one entry's check, not a million.
 */
function firstProblem(value: unknown): { value: unknown; index: number } | undefined {
  const entries = (value as { entries?: unknown } | null)?.entries;
  if (!Array.isArray(entries) || !byKind.document(value)) return undefined;
  for (let i = 0; i < entries.length; i++) {
    const type = (entries[i] as { type?: unknown } | null)?.type;
    const check = typeof type === 'string' ? byKind.kinds.get(type) : undefined;
    if (check === undefined || !check(entries[i])) return { value: { ...(value as object), entries: [entries[i]] }, index: i };
  }
  return undefined;
}

/** Validates a parsed JSON value; throws InvalidManifestError at the first problem. */
export function validateManifest(value: unknown): CheckedManifest {
  if (!passesSchemaByKind(value)) {
    const one = firstProblem(value);
    if (one) {
      const result = validate('manifest', one.value);
      const issues = result.ok ? [] : narrowIssues(one.value, result.issues).filter((i) => i.pointer.startsWith('/entries/0'));
      const issue = entryTypeIssue(one.value) ?? issues[0];
      if (issue) throw new InvalidManifestError(issue.message, issue.pointer.replace(/^\/entries\/0/, `/entries/${one.index}`));
    }
    // The full schema, for the same messages and pointers as ever.
    const result = validate('manifest', value);
    if (!result.ok) {
      const typeIssue = entryTypeIssue(value);
      const issue = typeIssue ?? narrowIssues(value, result.issues)[0]!;
      throw new InvalidManifestError(issue.message, issue.pointer === '' ? '(document)' : issue.pointer);
    }
  }
  const manifest = value as Manifest;
  checkManifest(manifest);
  return manifest;
}

/**
 * Parses and validates manifest JSON text. Bytes must be UTF-8 (RFC 8259):
 * decoding them with replacement characters would turn names that are not
 * UTF-8 into U+FFFD, silently; such names belong in {"base64"}.
 */
export function parseManifest(text: string | Buffer): CheckedManifest {
  if (typeof text !== 'string') return parseManifestText(manifestText(text));
  checkManifestSize(Buffer.byteLength(text));
  return parseManifestText(text);
}

/**
 * The JSON text of manifest bytes, with their size and encoding checked: a
 * caller that holds the bytes can let them go before the parse, which then
 * does not hold both.
 */
export function manifestText(bytes: Buffer): string {
  return manifestTextBytes(bytes).toString('latin1');
}

/**
 * manifestText's text as its bytes, ASCII: `bytes` themselves when they are
 * ASCII. `shared`: in a SharedArrayBuffer of their size, for a worker to read
 * too.
 */
export function manifestTextBytes(bytes: Buffer, shared = false): Buffer {
  checkManifestSize(bytes.length);
  if (isAscii(bytes)) return shared ? copyInto(bytes.length, [bytes], true) : bytes;
  if (!isUtf8(bytes)) throw new InvalidManifestError('is not valid UTF-8: JSON text is UTF-8; write a name that is not UTF-8 as {"base64": "..."}', '(document)');
  return asciiJson(bytes, shared);
}

function copyInto(length: number, pieces: Buffer[], shared: boolean): Buffer {
  const out = shared ? Buffer.from(new SharedArrayBuffer(length)) : Buffer.allocUnsafe(length);
  let at = 0;
  for (const piece of pieces) at += piece.copy(out, at);
  return out;
}

/**
 * UTF-8 JSON text as ASCII, to be held as a string of one byte per
 * character, which it would not be if decoded as it is: V8 holds a string
 * with any character above U+00FF at two bytes per character, so one
 * accented name doubled the memory of a 40 MB manifest's text. Outside its
 * strings JSON is ASCII, and inside them a \uXXXX escape parses to the
 * character it names, so every character beyond ASCII is written as its
 * escape (UTF-16 units, as JSON counts them).
 * (The position a JSON syntax error names counts the escaped text.)
 */
function asciiJson(bytes: Buffer, shared: boolean): Buffer {
  // Most of a manifest is ASCII: only the pieces that are not are decoded
  // and escaped, each piece cut at a character boundary (not before a
  // continuation byte, 10xxxxxx).
  const pieces: Buffer[] = [];
  let length = 0;
  for (let start = 0; start < bytes.length; ) {
    let end = Math.min(start + ASCII_PIECE, bytes.length);
    while (end < bytes.length && (bytes[end]! & 0xc0) === 0x80) end++;
    const piece = bytes.subarray(start, end);
    pieces.push(isAscii(piece) ? piece : Buffer.from(escapeNonAscii(piece.toString('utf8')), 'latin1'));
    length += pieces[pieces.length - 1]!.length;
    start = end;
  }
  return copyInto(length, pieces, shared);
}

/** How much of a manifest's text asciiJson looks at a time. */
const ASCII_PIECE = 64 * 1024;

function escapeNonAscii(text: string): string {
  return text.replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Parses and validates manifest JSON text (a string, or what manifestText returns). */
export function parseManifestText(json: string): CheckedManifest {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch (err) {
    throw new InvalidManifestError(`is not valid JSON: ${(err as Error).message}`, '(document)');
  }
  return validateManifest(value);
}

function checkManifestSize(size: number): void {
  if (size > MAX_MANIFEST_BYTES) throw new InvalidManifestError(`the manifest is ${size} bytes, at most ${MAX_MANIFEST_BYTES}`, '(document)');
}
