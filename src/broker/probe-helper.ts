// A prober: a long-lived child of the front (one of a small pool) that is
// sent caller fds over its channel (fd 3) and answers what fstat and statfs
// say about each, then closes it. Anything that touches a caller's file
// happens here, never on the front's event loop: a file whose filesystem
// never answers (a stopped FUSE server) stalls only this process, which the
// front kills at its deadline and replaces.
import { closeSync, fstatSync, readFileSync, readlinkSync, statfsSync } from 'node:fs';
import { Channel, type Frame } from './channel.js';

function examine(fd: number) {
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
  return { mode: st.mode, uid: st.uid, magic, path, mountId };
}

const channel = new Channel(3);
channel.on('close', (err?: Error) => {
  if (err) process.stderr.write(`mountgated: fd prober: ${err.message}\n`);
  process.exit(err ? 1 : 0);
});
channel.on('frame', (frame: Frame, fds: number[]) => {
  const fd = fds[0];
  let reply: Frame;
  try {
    reply = fd === undefined ? { id: frame.id, error: 'no fd came with the request' } : { id: frame.id, facts: examine(fd) };
  } catch (err) {
    reply = { id: frame.id, error: (err as Error).message };
  } finally {
    for (const f of fds) closeSync(f);
  }
  void channel.send(reply);
});
