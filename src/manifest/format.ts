// A manifest as JSON text, one entry a line: the layout scan.ts splits with
// one native search per entry (the broker's build reads a manifest so, one
// entry at a time), and one that stays readable and diffs line by line. What
// the client sends the broker and what `mountgate manifest` writes.
import type { Manifest } from '../schema/types.generated.js';

/** The manifest's text: its other members first, then "entries", each entry on a line of its own. */
export function manifestJson(m: Manifest): string {
  const { entries, ...head } = m;
  const lines = entries.map((e) => '    ' + JSON.stringify(e));
  const headText = JSON.stringify(head, null, 2).slice(0, -2);
  return `${headText},\n  "entries": [\n${lines.join(',\n')}\n  ]\n}\n`;
}
