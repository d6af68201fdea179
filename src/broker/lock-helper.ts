// Runs inside a user and mount namespace that the broker made for one bind
// (unshare --user --map-root-user --mount): its mount table is a copy of the
// broker's, and the kernel has locked every flag of every mount in it, as it
// does for any mount namespace owned by a less privileged user namespace.
// Clones the staged mount at argv[2] (non-recursive: the kernel refuses it
// when locked mounts lie below, so nothing they hide is uncovered), prints
// the fd number and waits, holding the fd, until the broker has taken a copy
// with pidfd_getfd and closes stdin.
import { openTreeClonePath } from '../sys/syscalls.js';

let line: string;
try {
  line = `fd ${openTreeClonePath(process.argv[2]!)}`;
} catch (err) {
  line = `error ${(err as { code?: string }).code ?? (err as Error).message}`;
}
process.stdout.write(`${line}\n`);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
