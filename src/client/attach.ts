// Attaching a detached mount returned by the broker. It must run in a mount
// namespace the calling process may change: one owned by its own user
// namespace (see namespace.ts), or the host's for root.
import { moveMount } from '../sys/syscalls.js';

export function attachMount(mountFd: number, target: string): void {
  moveMount(mountFd, target);
}
