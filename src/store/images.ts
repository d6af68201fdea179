// Images registered per user and the proof-of-possession ledger. An image is
// the broker-written composefs EROFS file plus what the policy needs to know
// about it; it is shared by every user who registered the same bytes, and
// removed with its unreferenced objects when the last one drops it.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from './atomic.js';

export interface ImageMeta {
  id: string;
  name?: string;
  entries: number;
  /** Content objects the image's files need, digest -> size. */
  objects: Record<string, number>;
  /** Sum of the file sizes. */
  bytes: number;
  /** Size of the image's own metadata (its EROFS file): it counts toward the quota too. */
  imageBytes: number;
  /** Registered by these uids, with the time each did. */
  owners: Record<string, string>;
}

export class ImageRegistry {
  private readonly imagesDir: string;
  private readonly usersDir: string;
  private readonly images = new Map<string, ImageMeta>();
  private readonly possessed = new Map<number, Set<string>>();

  constructor(stateDir: string) {
    this.imagesDir = join(stateDir, 'images');
    this.usersDir = join(stateDir, 'users');
    mkdirSync(this.imagesDir, { recursive: true, mode: 0o700 });
    mkdirSync(this.usersDir, { recursive: true, mode: 0o700 });
    for (const id of readdirSync(this.imagesDir)) {
      const metaPath = join(this.imagesDir, id, 'meta.json');
      // An image directory without its meta was interrupted before registration.
      if (!existsSync(metaPath)) rmSync(join(this.imagesDir, id), { recursive: true, force: true });
      else {
        const meta = JSON.parse(readFileSync(metaPath, 'utf8')) as ImageMeta;
        // Registered before metadata was accounted: its size is the image file's.
        meta.imageBytes ??= statSync(this.imagePath(id)).size;
        this.images.set(id, meta);
      }
    }
    for (const f of readdirSync(this.usersDir)) {
      const uid = Number(f.replace(/\.json$/, ''));
      if (Number.isInteger(uid)) this.possessed.set(uid, new Set(JSON.parse(readFileSync(join(this.usersDir, f), 'utf8')) as string[]));
    }
  }

  imagePath(id: string): string {
    return join(this.imagesDir, id, 'image.erofs');
  }

  get(id: string): ImageMeta | undefined {
    return this.images.get(id);
  }

  /** The image if `uid` registered it. */
  ownedBy(id: string, uid: number): ImageMeta | undefined {
    const meta = this.images.get(id);
    return meta && String(uid) in meta.owners ? meta : undefined;
  }

  listFor(uid: number): ImageMeta[] {
    return [...this.images.values()].filter((m) => String(uid) in m.owners).sort((a, b) => a.id.localeCompare(b.id));
  }

  all(): IterableIterator<ImageMeta> {
    return this.images.values();
  }

  /** Registers `uid` for an image, writing the image file first if it is new. */
  register(meta: Omit<ImageMeta, 'owners'>, image: Uint8Array, uid: number): ImageMeta {
    let current = this.images.get(meta.id);
    if (!current) {
      mkdirSync(join(this.imagesDir, meta.id), { recursive: true, mode: 0o700 });
      writeFileAtomic(this.imagePath(meta.id), image, 0o400);
      current = { ...meta, owners: {} };
    }
    const updated: ImageMeta = { ...current, owners: { ...current.owners, [String(uid)]: new Date().toISOString() } };
    if (meta.name && !updated.name) updated.name = meta.name;
    this.writeMeta(updated);
    return updated;
  }

  /** Drops uid's registration; returns true when the image itself is now gone. */
  unregister(id: string, uid: number): boolean {
    const meta = this.images.get(id);
    if (!meta) return false;
    const owners = { ...meta.owners };
    delete owners[String(uid)];
    if (Object.keys(owners).length > 0) {
      this.writeMeta({ ...meta, owners });
      return false;
    }
    this.images.delete(id);
    rmSync(join(this.imagesDir, id), { recursive: true, force: true });
    return true;
  }

  hasProven(uid: number, digest: string): boolean {
    return this.possessed.get(uid)?.has(digest) ?? false;
  }

  /** Records that uid uploaded these objects (their bytes hashed by the broker). */
  recordProof(uid: number, digests: string[]): void {
    const set = this.possessed.get(uid) ?? new Set<string>();
    for (const d of digests) set.add(d);
    this.possessed.set(uid, set);
    writeFileAtomic(join(this.usersDir, `${uid}.json`), JSON.stringify([...set]));
  }

  /** Forgets proofs for objects no longer in the store. */
  forgetProofs(digests: Set<string>): void {
    for (const [uid, set] of this.possessed) {
      let changed = false;
      for (const d of digests) changed = set.delete(d) || changed;
      if (changed) writeFileAtomic(join(this.usersDir, `${uid}.json`), JSON.stringify([...set]));
    }
  }

  private writeMeta(meta: ImageMeta): void {
    writeFileAtomic(join(this.imagesDir, meta.id, 'meta.json'), JSON.stringify(meta));
    this.images.set(meta.id, meta);
  }
}
