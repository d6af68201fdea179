// Per-user counters for the policy's limits: requests in progress and
// requests accepted in the last 60 seconds. The decision reads a snapshot.
import type { UsageFacts } from '../policy/decide.js';

const windowMs = 60_000;

export class UsageTracker {
  private readonly inFlight = new Map<number, number>();
  private readonly recent = new Map<number, number[]>();

  constructor(private readonly now: () => number = Date.now) {}

  snapshot(uid: number): UsageFacts {
    return { inFlight: this.inFlight.get(uid) ?? 0, lastMinute: this.prune(uid).length };
  }

  /** Counts a request as started; call the returned function when it ends. */
  begin(uid: number): () => void {
    this.inFlight.set(uid, (this.inFlight.get(uid) ?? 0) + 1);
    this.prune(uid).push(this.now());
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const n = (this.inFlight.get(uid) ?? 1) - 1;
      if (n === 0) this.inFlight.delete(uid);
      else this.inFlight.set(uid, n);
    };
  }

  private prune(uid: number): number[] {
    const since = this.now() - windowMs;
    const times = (this.recent.get(uid) ?? []).filter((t) => t > since);
    this.recent.set(uid, times);
    return times;
  }
}
