// Runs as a short-lived child of the broker with a caller's fd as fd 3 and
// prints what fstat and statfs say about it, as one JSON line. Anything that
// touches the caller's file happens here, never on the broker's event loop:
// a file whose filesystem never answers (a stopped FUSE server) stalls only
// this process, which the broker kills at its deadline.
import { fstatSync, readFileSync, readlinkSync, statfsSync } from 'node:fs';

const fd = 3;
const st = fstatSync(fd);
// statfs through the fd's magic link: the filesystem of exactly that file.
const magic = statfsSync(`/proc/self/fd/${fd}`).type >>> 0;
let path: string | undefined;
try {
  path = readlinkSync(`/proc/self/fd/${fd}`);
} catch {
  path = undefined;
}
const mountId = Number(/^mnt_id:\s*(\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1] ?? -1);
process.stdout.write(`${JSON.stringify({ mode: st.mode, uid: st.uid, magic, path, mountId })}\n`);
