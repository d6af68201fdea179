// Memory given back after big work. V8 collects garbage only when the
// process allocates, and a front at rest allocates nothing: the image bytes
// of a big AddImage (tens of MiB outside the heap) or the lists of a big
// upload stay resident until the next call's allocations trigger a
// collection, which may be never; and SQLite keeps the pages a big
// transaction touched in its cache. After a call that may have held much,
// once the front has been quiet for a moment, a full collection runs (the
// front has --expose-gc: node-flags.ts), the owner's caches are shrunk (the
// database's), then malloc_trim gives the freed pages of glibc's arenas back. Under a stream of calls it waits (at most maxDelayMs),
// so it never runs in the middle of a burst.
import { mallocTrim } from '../sys/syscalls.js';

/** Quiet time after the last big call before memory is given back. */
export const quietMs = 1000;
/** The longest a pending return waits for quiet. */
const maxDelayMs = 10_000;

export class MemoryReturn {
  private timer: NodeJS.Timeout | undefined;
  private firstAsked = 0;

  /** `shrink`: frees the owner's caches (run before the trim). */
  constructor(private readonly shrink: () => void = () => undefined) {}

  /** A call that may have held much memory just ended: give it back once quiet. */
  soon(): void {
    const now = Date.now();
    if (this.timer) clearTimeout(this.timer);
    else this.firstAsked = now;
    const wait = Math.max(0, Math.min(quietMs, this.firstAsked + maxDelayMs - now));
    this.timer = setTimeout(() => this.now(), wait).unref();
  }

  /** Collects and trims at once. */
  now(): void {
    this.timer = undefined;
    (globalThis as { gc?: () => void }).gc?.();
    this.shrink();
    mallocTrim();
  }
}
