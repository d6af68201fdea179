// Helper processes started on demand and let go when idle. A Node process
// costs the broker its resident memory (about 8 MiB of PSS for even the
// smallest helper) for as long as it lives, and a start (one to two hundred
// milliseconds here) when it is needed again. A pool starts a helper when a
// call needs one and none is idle, keeps it for the next call, and lets it go
// `idleMs` after its last use: a broker at rest holds none, a busy one starts
// none. How many run at once is bounded by the caller (a FairQueue's slots).
export interface PooledHelper {
  /** False once the helper exited or was killed: it is never handed out again. */
  readonly alive: boolean;
  /** Ends the helper (idle, broken, or the pool is closing). */
  kill(): void;
}

/** How long an idle helper waits for its next call before it is let go. */
export const helperIdleMs = 5000;

export class IdlePool<T extends PooledHelper> {
  private readonly idle: { helper: T; timer: NodeJS.Timeout }[] = [];
  private closed = false;

  constructor(private readonly start: () => T, private readonly idleMs = helperIdleMs) {}

  /** An idle helper (the one used last, so the others can expire), or a new one. */
  take(): T {
    for (let entry = this.idle.pop(); entry; entry = this.idle.pop()) {
      clearTimeout(entry.timer);
      if (entry.helper.alive) return entry.helper;
    }
    return this.start();
  }

  /** Takes a helper back after its call: idle until the next one, or let go after `idleMs`. A dead one is dropped. */
  give(helper: T): void {
    if (!helper.alive || this.closed) {
      helper.kill();
      return;
    }
    const entry = {
      helper,
      timer: setTimeout(() => {
        const at = this.idle.indexOf(entry);
        if (at >= 0) this.idle.splice(at, 1);
        helper.kill();
      }, this.idleMs).unref(),
    };
    this.idle.push(entry);
  }

  /**
   * Has a helper idle for a call expected soon (started now unless one is
   * idle already): its start overlaps what the caller does before the call.
   * At most one is started so, however often it is asked.
   */
  warm(): void {
    if (this.closed || this.idle.some((e) => e.helper.alive)) return;
    this.give(this.start());
  }

  /** Helpers idle now. */
  get idleCount(): number {
    return this.idle.length;
  }

  /** Lets every idle helper go; helpers given back later are let go at once. */
  close(): void {
    this.closed = true;
    for (const { helper, timer } of this.idle.splice(0)) {
      clearTimeout(timer);
      helper.kill();
    }
  }
}
