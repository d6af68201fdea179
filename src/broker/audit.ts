// One structured line per decision, on stdout for the journal: who asked,
// what, the verdict, the reasons, and what was mounted.
export interface AuditRecord {
  event: 'decision' | 'result' | 'start' | 'ready' | 'policy' | 'error' | 'stop';
  method?: string;
  caller?: { uid: number; pid: number; name?: string; bus?: string };
  allowed?: boolean;
  reason?: string;
  message?: string;
  checks?: string[];
  mounted?: unknown;
  [key: string]: unknown;
}

export type AuditSink = (record: AuditRecord) => void;

/** Longest string field of an audit line: a caller's echoed text must not flood the journal. */
const maxFieldChars = 8192;

function capped(value: unknown): unknown {
  if (typeof value === 'string') return value.length > maxFieldChars ? `${value.slice(0, maxFieldChars)} ... (${value.length - maxFieldChars} more characters)` : value;
  if (Array.isArray(value)) return (value.length > 200 ? [...value.slice(0, 200), `... and ${value.length - 200} more`] : value).map(capped);
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, capped(v)]));
  return value;
}

export const stdoutAudit: AuditSink = (record) => {
  process.stdout.write(`${JSON.stringify(capped({ time: new Date().toISOString(), ...record }))}\n`);
};
