// The reference tools (composefs' mkcomposefs, mount.composefs, composefs-info),
// built outside this repository: found under $MOUNTGATE_REF_COMPOSEFS (its bin/
// and sbin/), else on PATH. A bench without them skips the comparison and says so.
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

export type ReferenceTool = 'mkcomposefs' | 'mount.composefs' | 'composefs-info';

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The tool's path, or null when it is neither under $MOUNTGATE_REF_COMPOSEFS nor on PATH. */
export function referenceTool(tool: ReferenceTool): string | null {
  const prefix = process.env.MOUNTGATE_REF_COMPOSEFS;
  const dirs = [...(prefix ? [join(prefix, 'bin'), join(prefix, 'sbin')] : []), ...(process.env.PATH ?? '').split(delimiter).filter(Boolean)];
  for (const dir of dirs) if (executable(join(dir, tool))) return join(dir, tool);
  return null;
}

/** Every tool's path, or the sentence a bench prints (and the reason it records) when one is missing. */
export function referenceTools<T extends ReferenceTool>(tools: T[]): { paths: Record<T, string> } | { missing: string } {
  const paths = {} as Record<T, string>;
  const absent: string[] = [];
  for (const t of tools) {
    const p = referenceTool(t);
    if (p) paths[t] = p;
    else absent.push(t);
  }
  if (absent.length === 0) return { paths };
  return { missing: `reference skipped: ${absent.join(', ')} not found under $MOUNTGATE_REF_COMPOSEFS or on PATH` };
}
