// Where the entries of a manifest's JSON text are, without parsing them: a
// scan of the text's structure that finds the top-level object's members and
// each element of its "entries" array, so that a caller can parse one entry
// at a time (JSON.parse of its text) and let it go, rather than hold every
// entry of a large manifest at once.
//
// The scan only finds boundaries: what lies between them is left to
// JSON.parse, which refuses what is not JSON. What it is not sure of (a
// document that is not an object, "entries" that is not an array or comes
// twice, anything it does not follow), it declines: the caller then parses the
// whole text, which accepts or refuses it in its own words.

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;

/** The members of a manifest's text: every one but "entries" parsed, and where each entry is. */
export interface ManifestLayout {
  /** The top-level members other than "entries", parsed. */
  head: Record<string, unknown>;
  count: number;
  /** Entry k is text.slice(starts[k], ends[k]). */
  starts: Uint32Array;
  ends: Uint32Array;
}

/** JSON's whitespace: space, tab, newline, carriage return. */
function skipSpace(text: string, at: number): number {
  for (;;) {
    const c = text.charCodeAt(at);
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return at;
    at++;
  }
}

/** The index just past the string that opens at `at`, or -1 when it does not close. */
function stringEnd(text: string, at: number): number {
  // Found natively: the next quote that an odd number of backslashes does not escape.
  for (let q = text.indexOf('"', at + 1); q >= 0; q = text.indexOf('"', q + 1)) {
    let b = q - 1;
    while (b > at && text.charCodeAt(b) === BACKSLASH) b--;
    if ((q - 1 - b) % 2 === 0) return q + 1;
  }
  return -1;
}

/**
 * The index just past the value that starts at `at` (an object, array,
 * string or scalar), or -1 when it does not end. Brackets are counted, not
 * matched: JSON.parse of the value refuses `{]`.
 */
function valueEnd(text: string, at: number): number {
  const first = text.charCodeAt(at);
  if (first === QUOTE) return stringEnd(text, at);
  if (first !== OPEN_BRACE && first !== OPEN_BRACKET) {
    let i = at;
    for (; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === COMMA || c === CLOSE_BRACE || c === CLOSE_BRACKET || c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) break;
    }
    return i > at ? i : -1;
  }
  let depth = 0;
  for (let i = at; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      const end = stringEnd(text, i);
      if (end < 0) return -1;
      i = end - 1;
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      depth++;
    } else if ((c === CLOSE_BRACE || c === CLOSE_BRACKET) && --depth === 0) {
      return i + 1;
    }
  }
  return -1;
}

/** JSON.parse of a piece of the text, or undefined when it is not JSON. */
function parsePiece(text: string, start: number, end: number): { value: unknown } | undefined {
  try {
    return { value: JSON.parse(text.slice(start, end)) };
  } catch {
    return undefined;
  }
}

/**
 * Where the members and entries of a manifest's text are, or undefined when
 * the text is not a JSON object with one "entries" array, or the scan is not
 * sure of it. Each entry's text is known to be a JSON value only once parsed.
 */
export function scanManifest(text: string): ManifestLayout | undefined {
  let at = skipSpace(text, 0);
  if (text.charCodeAt(at) !== OPEN_BRACE) return undefined;
  at = skipSpace(text, at + 1);
  const head: Record<string, unknown> = {};
  let entries: ReturnType<typeof scanElements>;
  if (text.charCodeAt(at) === CLOSE_BRACE) return undefined;
  for (;;) {
    if (text.charCodeAt(at) !== QUOTE) return undefined;
    const keyEnd = stringEnd(text, at);
    if (keyEnd < 0) return undefined;
    const key = parsePiece(text, at, keyEnd)?.value as string | undefined;
    if (key === undefined) return undefined;
    at = skipSpace(text, keyEnd);
    if (text.charCodeAt(at) !== COLON) return undefined;
    at = skipSpace(text, at + 1);
    if (key === 'entries') {
      if (entries !== undefined || text.charCodeAt(at) !== OPEN_BRACKET) return undefined;
      entries = scanElements(text, at);
      if (entries === undefined) return undefined;
      at = entries.end;
    } else {
      const end = valueEnd(text, at);
      if (end < 0) return undefined;
      const value = parsePiece(text, at, end);
      // "__proto__" would set the object's prototype, not a member: the whole parse words that.
      if (value === undefined || key === '__proto__' || Object.hasOwn(head, key)) return undefined;
      head[key] = value.value;
      at = end;
    }
    at = skipSpace(text, at);
    const c = text.charCodeAt(at);
    if (c === CLOSE_BRACE) break;
    if (c !== COMMA) return undefined;
    at = skipSpace(text, at + 1);
  }
  if (entries === undefined || skipSpace(text, at + 1) !== text.length) return undefined;
  return { head, count: entries.count, starts: entries.starts, ends: entries.ends };
}

/**
 * The end of the object that starts at `at` when it is the rest of its line,
 * as mountgate writes a manifest (one entry a line): the line ends in "}",
 * perhaps a comma and spaces, and the next line begins another entry or ends
 * the array. Found with one native search for the newline, where counting the
 * brackets reads every character; -1 when the line is not so (the brackets are
 * counted then). A raw newline cannot be inside a JSON string, but the object
 * may still go on past it ({"a": {} newline , "b": 1}): that the element is
 * one JSON value is known only once it is parsed, and a source that finds it
 * is not gives up on the text, which is then parsed whole. `newline` is the
 * first newline at or after `at` (-1: none), which the caller finds once per
 * line: a text of few lines (JSON.stringify's, all on one) is not searched to
 * its end again for every entry.
 */
function lineElementEnd(text: string, at: number, newline: number): number {
  if (newline < 0 || text.charCodeAt(at) !== OPEN_BRACE) return -1;
  let end = newline;
  for (let c = text.charCodeAt(end - 1); c === 0x20 || c === 0x0d || c === 0x09; c = text.charCodeAt(--end - 1));
  if (text.charCodeAt(end - 1) === COMMA) end--;
  while (text.charCodeAt(end - 1) === 0x20 || text.charCodeAt(end - 1) === 0x09) end--;
  if (end - 1 <= at || text.charCodeAt(end - 1) !== CLOSE_BRACE) return -1;
  const next = text.charCodeAt(skipSpace(text, newline));
  return next === OPEN_BRACE || next === CLOSE_BRACKET ? end : -1;
}

/** The elements of the array that opens at `at`: where each is, and the index past the array. */
function scanElements(text: string, at: number): { starts: Uint32Array; ends: Uint32Array; count: number; end: number } | undefined {
  // Grown by doubling; an entry of a real manifest is 100 bytes or more.
  let starts = new Uint32Array(1024);
  let ends = new Uint32Array(1024);
  let count = 0;
  at = skipSpace(text, at + 1);
  if (text.charCodeAt(at) === CLOSE_BRACKET) return { starts, ends, count, end: at + 1 };
  // The next newline at or after `at`, found again only once `at` has passed it (-1: the text has no more).
  let newline = text.indexOf('\n', at);
  for (;;) {
    if (newline >= 0 && newline < at) newline = text.indexOf('\n', at);
    let end = lineElementEnd(text, at, newline);
    if (end < 0) end = valueEnd(text, at);
    if (end < 0) return undefined;
    if (count === starts.length) {
      const grownStarts = new Uint32Array(count * 2);
      grownStarts.set(starts);
      starts = grownStarts;
      const grownEnds = new Uint32Array(count * 2);
      grownEnds.set(ends);
      ends = grownEnds;
    }
    starts[count] = at;
    ends[count] = end;
    count++;
    at = skipSpace(text, end);
    const c = text.charCodeAt(at);
    if (c === CLOSE_BRACKET) return { starts, ends, count, end: at + 1 };
    if (c !== COMMA) return undefined;
    at = skipSpace(text, at + 1);
  }
}
