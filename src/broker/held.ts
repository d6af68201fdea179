// Objects the broker holds for a user between a ProveObjects and the
// AddImage that needs them. ProveObjects hashes files the caller passes and
// answers their digests; for each one it keeps a file in the store's tmp
// directory (a hard link to the store's own object when the store has it,
// no bytes written; a copy of what it hashed otherwise), so that the
// AddImage that follows finds the caller's proof whether or not the store
// held the content before. Had it kept only the proofs of what the store
// already had, AddImage's list of missing objects would tell the caller
// whether anyone's image holds a given content: holding both kinds alike,
// the answer is the same either way.
//
// Holds are transient by design: in memory, each until AddImage adopts it
// (the object is then published and proven as PutObjects would) or until it
// expires (`heldMs`), its file removed then. They are bounded per user (bytes
// by the user's quota, objects by the policy's entries per image), and a
// restart drops them all with the tmp directory: a client whose AddImage
// then reports objects missing uploads them with PutObjects, as without.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';

/** How long a hold lasts unless AddImage adopts it first. */
export const heldMs = 10 * 60_000;

/** The held file's name in the store's tmp directory (upload helpers' tmp names are "<uid>-<hex>.<n>": no clash). */
export function heldName(uid: number, digest: string): string {
  return `held.${uid}.${digest}`;
}

interface Hold {
  size: number;
  expires: number;
}

export class HeldObjects {
  private readonly byUid = new Map<number, Map<string, Hold>>();
  private readonly bytesOf = new Map<number, number>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly tmpDir: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** What uid holds now. */
  usage(uid: number): { objects: number; bytes: number } {
    return { objects: this.byUid.get(uid)?.size ?? 0, bytes: this.bytesOf.get(uid) ?? 0 };
  }

  /** Whether uid holds the object (its file is heldName(uid, digest)). */
  has(uid: number, digest: string): boolean {
    return this.byUid.get(uid)?.has(digest) === true;
  }

  /** uid's holds, digest and size (a copy: adopting them changes the set). */
  of(uid: number): [string, number][] {
    return [...(this.byUid.get(uid) ?? [])].map(([d, h]) => [d, h.size]);
  }

  /** Records a hold whose file the caller has just given its held name; a hold uid had of it is renewed. Returns whether it is new. */
  add(uid: number, digest: string, size: number): boolean {
    let mine = this.byUid.get(uid);
    if (!mine) this.byUid.set(uid, (mine = new Map()));
    const fresh = !mine.has(digest);
    mine.set(digest, { size, expires: this.now() + heldMs });
    if (fresh) this.bytesOf.set(uid, (this.bytesOf.get(uid) ?? 0) + size);
    this.arm();
    return fresh;
  }

  /** Ends a hold; with `removeFile`, its file goes too (off the event loop). */
  release(uid: number, digest: string, removeFile: boolean): void {
    const mine = this.byUid.get(uid);
    const hold = mine?.get(digest);
    if (!mine || !hold) return;
    mine.delete(digest);
    this.bytesOf.set(uid, this.bytesOf.get(uid)! - hold.size);
    if (mine.size === 0) {
      this.byUid.delete(uid);
      this.bytesOf.delete(uid);
    }
    if (removeFile) void rm(join(this.tmpDir, heldName(uid, digest)), { force: true }).catch(() => undefined);
  }

  /** Drops every hold past its time, with its file. */
  expire(): number {
    const now = this.now();
    let gone = 0;
    for (const [uid, mine] of [...this.byUid]) {
      for (const [digest, hold] of [...mine]) {
        if (hold.expires > now) continue;
        this.release(uid, digest, true);
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
