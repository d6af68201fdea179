// A bounded pool of slots for expensive work (fd probes, image builds,
// executor plans, upload chunks), shared by every caller and handed out
// round-robin between users: one user's flood waits behind its own earlier
// requests, never in front of another user's. Waiting counts toward the
// caller's in-flight limit, which is checked before anything is queued.

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
    const release = await this.acquire(uid);
    try {
      return await work();
    } finally {
      release();
    }
  }

  /** A slot, once one is free and it is this uid's turn; call the returned function (once) to give it back. */
  async acquire(uid: number): Promise<() => void> {
    if (this.running >= this.slots || this.waiting.size > 0) {
      await new Promise<void>((grant) => {
        const line = this.waiting.get(uid);
        if (line) line.push({ grant });
        else this.waiting.set(uid, [{ grant }]);
      });
    } else {
      this.running++;
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.release();
    };
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

/** `chunks`, each handed on only in `uid`'s turn of `queue`; the turn lasts until the next chunk is asked for. */
export async function* fairChunks<T>(queue: FairQueue, uid: number, chunks: AsyncIterable<T>): AsyncGenerator<T> {
  for await (const chunk of chunks) {
    const release = await queue.acquire(uid);
    try {
      yield chunk;
    } finally {
      release();
    }
  }
}
