// A manifest as JSON text, one entry a line: the layout scan.ts splits with
// one native search per entry (the broker's build reads a manifest so, one
// entry at a time), and one that stays readable and diffs line by line.
import type { Manifest } from '../schema/types.generated.js';

/** The manifest's text: its other members first, then "entries", each entry on a line of its own after `indent`. */
export function manifestJson(m: Manifest, indent = ''): string {
  const { entries, ...head } = m;
  const headText = JSON.stringify(head);
  const lines = entries.map((e) => indent + JSON.stringify(e));
  return `${headText.slice(0, -1)}${headText === '{}' ? '' : ','}"entries":[\n${lines.join(',\n')}\n]}\n`;
}
