// A bounded pool of slots for expensive work (image builds, fd probes),
// shared by every caller and handed out round-robin between users: one
// user's flood waits behind its own earlier requests, never in front of
// another user's. Waiting counts toward the caller's in-flight limit, which
// is checked before anything is queued.

interface Waiter {
  grant: () => void;
}

export class FairQueue {
  private running = 0;
  /** Waiting requests per uid, in arrival order; the Map's order is the rotation. */
  private readonly waiting = new Map<number, Waiter[]>();

  constructor(readonly slots: number) {}

  /** Runs `work` once a slot is free and it is this uid's turn. */
  async run<T>(uid: number, work: () => Promise<T>): Promise<T> {
    if (this.running >= this.slots || this.waiting.size > 0) {
      await new Promise<void>((grant) => {
        const line = this.waiting.get(uid);
        if (line) line.push({ grant });
        else this.waiting.set(uid, [{ grant }]);
      });
    } else {
      this.running++;
    }
    try {
      return await work();
    } finally {
      this.release();
    }
  }

  /** Requests waiting for a slot, over all users. */
  get queued(): number {
    let n = 0;
    for (const line of this.waiting.values()) n += line.length;
    return n;
  }

  private release(): void {
    // The next uid in rotation gets the slot; it goes to the back of the rotation.
    const next = this.waiting.entries().next();
    if (next.done) {
      this.running--;
      return;
    }
    const [uid, line] = next.value;
    const waiter = line.shift()!;
    this.waiting.delete(uid);
    if (line.length > 0) this.waiting.set(uid, line);
    waiter.grant();
  }
}
