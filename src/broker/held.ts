// Objects the broker holds for a user between a ProveObjects and the
// AddImage that needs them. ProveObjects hashes files the caller passes and
// answers their digests; an object the store lacks is copied and given its
// name in the store (no image needs it yet, so the database does not record
// it: the pin keeps it), one the store has is only pinned (nothing is
// written for it). A pinned file is not deleted, even when the last image
// that needs it goes. Either way the AddImage that follows finds the
// caller's proof. Had only the proofs of what the store already had been
// kept, and without the pin, AddImage's list of missing objects would tell
// the caller whether anyone's image holds a given content (or did, moments
// before).
//
// Holds are transient by design: in memory, each until AddImage adopts it
// (the object is then recorded present and proven, as PutObjects would) or
// until it expires (`heldMs`), its pin let go then (and the file deleted if
// no image needs it). They are bounded per user (bytes by the user's quota,
// objects by the policy's entries per image), and a restart drops them all
// (the reconciliation at start deletes the files no image needs): a client
// whose AddImage then reports objects missing uploads them with PutObjects,
// as without.

/** How long a hold lasts unless AddImage adopts it first. */
export const heldMs = 10 * 60_000;

export interface Hold {
  size: number;
  expires: number;
}

export class HeldObjects {
  private readonly byUid = new Map<number, Map<string, Hold>>();
  private readonly bytesOf = new Map<number, number>();
  /** Holds that pin the store's file of each digest. */
  private readonly pins = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    /** Told when the last pin of a digest goes (its file may be deleted then, if no image needs it). */
    private readonly onUnpinned: (digest: string) => void = () => undefined,
    private readonly now: () => number = Date.now,
  ) {}

  /** What uid holds now. */
  usage(uid: number): { objects: number; bytes: number } {
    return { objects: this.byUid.get(uid)?.size ?? 0, bytes: this.bytesOf.get(uid) ?? 0 };
  }

  get(uid: number, digest: string): Hold | undefined {
    return this.byUid.get(uid)?.get(digest);
  }

  /** Whether some hold keeps the store's file of the digest. */
  pinned(digest: string): boolean {
    return this.pins.has(digest);
  }

  /** uid's holds, digest and size (a copy: adopting them changes the set). */
  of(uid: number): [string, number][] {
    return [...(this.byUid.get(uid) ?? [])].map(([d, h]) => [d, h.size]);
  }

  /** Records uid's hold of the object, a pin of its file in the store; one uid had already is renewed (returns false). */
  add(uid: number, digest: string, size: number): boolean {
    let mine = this.byUid.get(uid);
    if (!mine) this.byUid.set(uid, (mine = new Map()));
    const had = mine.get(digest);
    if (had) {
      had.expires = this.now() + heldMs;
      return false;
    }
    mine.set(digest, { size, expires: this.now() + heldMs });
    this.bytesOf.set(uid, (this.bytesOf.get(uid) ?? 0) + size);
    this.pins.set(digest, (this.pins.get(digest) ?? 0) + 1);
    this.arm();
    return true;
  }

  /** Ends a hold: its pin is let go. */
  release(uid: number, digest: string): void {
    const mine = this.byUid.get(uid);
    const hold = mine?.get(digest);
    if (!mine || !hold) return;
    mine.delete(digest);
    this.bytesOf.set(uid, this.bytesOf.get(uid)! - hold.size);
    if (mine.size === 0) {
      this.byUid.delete(uid);
      this.bytesOf.delete(uid);
    }
    const n = this.pins.get(digest)! - 1;
    if (n > 0) this.pins.set(digest, n);
    else {
      this.pins.delete(digest);
      this.onUnpinned(digest);
    }
  }

  /** Drops every hold past its time. */
  expire(): number {
    const now = this.now();
    let gone = 0;
    for (const [uid, mine] of [...this.byUid]) {
      for (const [digest, hold] of [...mine]) {
        if (hold.expires > now) continue;
        this.release(uid, digest);
        gone++;
      }
    }
    return gone;
  }

  /** Checks for expired holds once a minute while there are any (the timer does not keep the broker alive). */
  private arm(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      this.expire();
      if (this.byUid.size === 0) this.stop();
    }, 60_000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
