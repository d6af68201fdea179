// One structured line per decision, on stdout for the journal: who asked,
// what, the verdict, the reasons, and what was mounted.
export interface AuditRecord {
  event: 'decision' | 'start' | 'ready' | 'policy' | 'error' | 'stop';
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

export const stdoutAudit: AuditSink = (record) => {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...record })}\n`);
};
