// A prober: a long-lived child of the front (one of a small pool). For each
// request line {"id", "fd"} on stdin it examines fd number `fd` of its parent,
// the front, through /proc (stat, statfs and readlink of the magic link,
// fdinfo for the mount id; the same file and mount as the fd itself), and
// answers one JSON line on stdout. Anything that touches a caller's file
// happens here, never on the front's event loop: a file whose filesystem
// never answers (a stopped FUSE server) stalls only this process, which the
// front kills at its deadline and replaces.
import { readFileSync, readlinkSync, statfsSync, statSync } from 'node:fs';
import { createInterface } from 'node:readline';

const front = process.ppid;

function examine(fd: number) {
  const link = `/proc/${front}/fd/${fd}`;
  const st = statSync(link);
  const magic = statfsSync(link).type >>> 0;
  let path: string | undefined;
  try {
    path = readlinkSync(link);
  } catch {
    path = undefined;
  }
  const mountId = Number(/^mnt_id:\s*(\d+)/m.exec(readFileSync(`/proc/${front}/fdinfo/${fd}`, 'utf8'))?.[1] ?? -1);
  return { mode: st.mode, uid: st.uid, magic, path, mountId };
}

const lines = createInterface({ input: process.stdin });
// The front waits for this before it says it is ready.
process.stdout.write(`${JSON.stringify({ id: 0, ready: true })}\n`);
lines.on('line', (line) => {
  let reply: Record<string, unknown>;
  let id: unknown;
  try {
    const request = JSON.parse(line) as { id: unknown; fd: unknown };
    id = request.id;
    if (!Number.isInteger(request.fd)) throw new Error('no fd number');
    reply = { id, facts: examine(request.fd as number) };
  } catch (err) {
    reply = { id, error: (err as Error).message };
  }
  process.stdout.write(`${JSON.stringify(reply)}\n`);
});
lines.on('close', () => process.exit(0));
