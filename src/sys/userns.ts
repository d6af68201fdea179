// User namespaces that carry an idmap for mount_setattr(MOUNT_ATTR_IDMAP).
// The broker builds them itself: it starts a child in a new user namespace,
// writes the child's uid_map and gid_map as root, keeps an fd of the
// namespace and lets the child go. It never uses a namespace of the caller's.
// A Node process cannot unshare itself (it has threads), hence the child.
import { spawn } from 'node:child_process';
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { mapKey, toProcMap, type IdRange } from '../policy/idmap.js';

async function buildNamespace(uidMap: IdRange[], gidMap: IdRange[]): Promise<number> {
  const child = spawn('unshare', ['--user', '--', 'sh', '-c', 'echo ready; read _'], { stdio: ['pipe', 'pipe', 'pipe'] });
  try {
    await new Promise<void>((resolve, reject) => {
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`unshare --user exited with ${code}: ${err.trim()}`)));
      child.stdout.once('data', () => resolve());
    });
    const pid = child.pid!;
    // The child is ours and not yet reaped, so its pid cannot be reused here.
    writeFileSync(`/proc/${pid}/uid_map`, toProcMap(uidMap));
    writeFileSync(`/proc/${pid}/gid_map`, toProcMap(gidMap));
    return openSync(`/proc/${pid}/ns/user`, 'r');
  } finally {
    child.stdin.end();
    child.removeAllListeners('exit');
    if (child.exitCode === null) child.kill('SIGKILL');
  }
}

/** A bounded cache of namespace fds, one per distinct mapping. */
export class UserNamespaceCache {
  private readonly entries = new Map<string, Promise<number>>();
  constructor(private readonly capacity = 64) {}

  /** An fd of a user namespace with exactly these maps; owned by the cache. */
  get(uidMap: IdRange[], gidMap: IdRange[]): Promise<number> {
    const key = mapKey(uidMap, gidMap);
    let entry = this.entries.get(key);
    if (entry) {
      // Refresh its place in the LRU order.
      this.entries.delete(key);
      this.entries.set(key, entry);
      return entry;
    }
    entry = buildNamespace(uidMap, gidMap);
    entry.catch(() => this.entries.delete(key));
    this.entries.set(key, entry);
    this.evict();
    return entry;
  }

  get size(): number {
    return this.entries.size;
  }

  private evict(): void {
    while (this.entries.size > this.capacity) {
      const [oldest, fd] = this.entries.entries().next().value as [string, Promise<number>];
      this.entries.delete(oldest);
      fd.then((n) => closeSync(n), () => undefined);
    }
  }

  close(): void {
    for (const fd of this.entries.values()) fd.then((n) => closeSync(n), () => undefined);
    this.entries.clear();
  }
}
