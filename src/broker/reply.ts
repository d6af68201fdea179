// Bounds on what the broker sends: every message text is escaped for the bus
// and capped, and no reply may exceed what the bus carries. The bus daemon
// drops a connection that sends an invalid string (a NUL echoed from a
// caller's path) or an oversized message, and with it every user's service.

/** Longest error message sent, in characters; echoed caller text is cut well before. */
export const maxMessageChars = 4096;
/**
 * Largest reply body, in bytes of its strings: half of what the system bus
 * takes per message (32 MiB). No reply is meant to come near it: AddImage's
 * list of missing digests, which grows with the image, travels in a sealed memfd.
 */
export const maxReplyBytes = 16 << 20;

/**
 * A D-Bus string may not contain NUL: a message that echoes a caller's bytes
 * (a path with a NUL in it) would make the bus daemon drop the broker's
 * connection. Control characters are shown escaped instead; lone surrogates
 * (which cannot be UTF-8) become U+FFFD.
 */
export function busSafe(text: string): string {
  // eslint-disable-next-line no-control-regex
  const escaped = text.replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return (escaped as unknown as { toWellFormed(): string }).toWellFormed();
}

/** `text` cut to at most `max` characters, saying how much was left out. */
export function capText(text: string, max = maxMessageChars): string {
  if (text.length <= max) return text;
  const note = ` ... (${text.length - max} more characters)`;
  return text.slice(0, Math.max(0, max - note.length)) + note;
}

/** Bytes a reply body's strings take on the wire, roughly (UTF-8 upper bound); numbers and fds are small. */
export function replySize(body: unknown[]): number {
  let n = 0;
  const visit = (v: unknown): void => {
    if (typeof v === 'string') n += v.length * 3 + 8;
    else if (Array.isArray(v)) v.forEach(visit);
    else if (v && typeof v === 'object') Object.values(v).forEach(visit);
    else n += 8;
  };
  body.forEach(visit);
  return n;
}
