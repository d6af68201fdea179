// Images registered per user: the broker-written composefs EROFS files
// (images/<id>/image.erofs) and their bookkeeping in the store database
// (db.ts). An image is shared by every user who registered the same bytes,
// and removed with its unreferenced objects when the last one drops it.
//
// A state directory of the format before the database (images/<id>/meta.json
// and users/<uid>.json proof files) is imported once, in the transaction that
// creates the database; the old files are deleted once that is committed.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomicAsync } from './atomic.js';
import { StoreDb, type ImageHead, type ImageRow, type OwnedImage } from './db.js';
import type { ObjectList } from './object-list.js';

export type { ImageRow, NewImage, OwnedImage } from './db.js';

/** An image to register, its objects still packed: each turn of addRows decodes only its own rows. */
export interface PackedImage extends Omit<ImageHead, 'objects'> {
  objects: ObjectList;
}

/** The per-image record of the format before the database. */
interface LegacyMeta {
  id: string;
  name?: string;
  entries: number;
  objects: Record<string, number>;
  bytes: number;
  imageBytes?: number;
  owners: Record<string, string>;
}

export class LegacyStateError extends Error {}

export class ImageRegistry {
  private readonly imagesDir: string;
  private readonly legacyUsersDir: string;
  readonly db: StoreDb;
  /** Image files being written, by id. */
  private readonly imageFiles = new Map<string, Promise<void>>();

  /** `presentObjects` lists the object files in the store (asked only when an older state is imported). */
  constructor(stateDir: string, presentObjects: () => Iterable<string>) {
    this.imagesDir = join(stateDir, 'images');
    this.legacyUsersDir = join(stateDir, 'users');
    mkdirSync(this.imagesDir, { recursive: true, mode: 0o700 });
    const path = join(stateDir, 'store.db');
    let imported = false;
    this.db = new StoreDb(path, (db) => {
      imported = this.importLegacy(db, new Set(presentObjects()));
    });
    // Committed: the old records are no longer the truth (left over only if an earlier start crashed here).
    if (imported || existsSync(this.legacyUsersDir)) this.removeLegacy();
  }

  imagePath(id: string): string {
    return join(this.imagesDir, id, 'image.erofs');
  }

  /** Ids of the image directories on disk. */
  imageDirs(): Set<string> {
    return new Set(readdirSync(this.imagesDir));
  }

  /** Deletes an image's directory (its file). */
  removeImageDir(id: string): void {
    rmSync(join(this.imagesDir, id), { recursive: true, force: true });
  }

  get(id: string): ImageRow | undefined {
    return this.db.image(id);
  }

  ownedBy(id: string, uid: number): OwnedImage | undefined {
    return this.db.ownedBy(id, uid);
  }

  listFor(uid: number): OwnedImage[] {
    return this.db.listFor(uid);
  }

  /**
   * Registers `uid` for an image, at once in the database (what every
   * decision reads: its usage counts from now on); a new image's object rows
   * follow `rowsPerTurn` per transaction, one transaction per turn of the
   * event loop (others' calls are answered in between), decoded from the
   * packed list as they go, its file is written off the event loop, and the
   * image counts as stored only once both are done. `durable` resolves
   * then; it rejects when the image was removed before (its rows are then
   * dropped like any removed image's).
   */
  register(image: PackedImage, bytes: Uint8Array, uid: number, rowsPerTurn = 200): { owned: OwnedImage; durable: Promise<void> } {
    const { created, owned } = this.db.begin({ ...image, objects: image.objects.count }, uid);
    if (created) {
      mkdirSync(join(this.imagesDir, image.id), { recursive: true, mode: 0o700 });
      const written = writeFileAtomicAsync(this.imagePath(image.id), bytes, 0o400);
      const filled = this.addRows(image.id, image.objects, rowsPerTurn);
      const whole = Promise.all([written, filled]).then(([, complete]) => {
        if (!complete) throw new Error(`image ${image.id} was removed while it was being added`);
        // Gone meanwhile (its only owner dropped it): nothing to mark; added again since: the later registration marks it.
        if (this.imageFiles.get(image.id) === whole && this.db.image(image.id)) this.db.markStored(image.id);
      });
      this.imageFiles.set(image.id, whole);
      // A later registration of the same id (removed, then added again) has its own entry.
      void whole.finally(() => this.imageFiles.get(image.id) === whole && this.imageFiles.delete(image.id)).catch(() => undefined);
    }
    return { owned, durable: this.imageFiles.get(image.id) ?? Promise.resolve() };
  }

  /** Adds an image's object rows, `per` per transaction, one transaction per turn; resolves false when the image lost its owners meanwhile. */
  private addRows(id: string, objects: ObjectList, per: number): Promise<boolean> {
    if (!(per >= 1)) throw new RangeError(`rows per turn must be at least 1, not ${per}`);
    return new Promise((resolve, reject) => {
      let at = 0;
      const step = () => {
        try {
          if (!this.db.addRows(id, objects.slice(at, at + per))) return resolve(false);
        } catch (err) {
          return reject(err as Error);
        }
        at += per;
        if (at >= objects.count) resolve(true);
        else setImmediate(step);
      };
      setImmediate(step);
    });
  }

  /** Is the image's file on disk yet? (Its id is known before its AddImage is answered.) */
  stored(id: string): boolean {
    return this.db.image(id)?.stored === true && !this.imageFiles.has(id);
  }

  /**
   * Drops uid's registration (and of the hidden images kept for it). Returns
   * the images gone: their files are deleted now, their rows are left for
   * dropSome (the caller deletes them a bounded number at a time).
   */
  unregister(id: string, uid: number): string[] {
    const { gone } = this.db.unregister(id, uid, true);
    for (const g of gone) this.removeImageDir(g);
    return gone;
  }

  /** Drops uid's name, and with the image's last name its registration as unregister does (returning the images gone); undefined when uid has no such name. */
  removeName(uid: number, name: string): { id: string; unregistered: boolean; gone: string[] } | undefined {
    const r = this.db.removeName(uid, name, true);
    if (!r) return undefined;
    const gone = r.unregistered?.gone ?? [];
    for (const g of gone) this.removeImageDir(g);
    return { id: r.id, unregistered: r.unregistered !== undefined, gone };
  }

  /** Reads the format before the database into `db` (inside its creating transaction). Returns whether there was anything. */
  private importLegacy(db: StoreDb, present: Set<string>): boolean {
    const metas: LegacyMeta[] = [];
    for (const id of readdirSync(this.imagesDir)) {
      const metaPath = join(this.imagesDir, id, 'meta.json');
      // A directory without meta was an AddImage interrupted before registration: dropped by the reconciliation.
      if (!existsSync(metaPath)) continue;
      let meta: LegacyMeta;
      try {
        meta = JSON.parse(readFileSync(metaPath, 'utf8')) as LegacyMeta;
      } catch (err) {
        throw new LegacyStateError(`cannot import ${metaPath} (state of an older mountgated): ${(err as Error).message}; move the state directory away to start afresh`);
      }
      if (meta.id !== id || typeof meta.objects !== 'object' || typeof meta.owners !== 'object') {
        throw new LegacyStateError(`cannot import ${metaPath} (state of an older mountgated): it does not describe image ${id}; move the state directory away to start afresh`);
      }
      metas.push(meta);
    }
    const proofs = new Map<number, Set<string>>();
    if (existsSync(this.legacyUsersDir)) {
      for (const f of readdirSync(this.legacyUsersDir)) {
        const uid = Number(f.replace(/\.json$/, ''));
        if (!f.endsWith('.json') || !Number.isInteger(uid)) continue;
        try {
          proofs.set(uid, new Set(JSON.parse(readFileSync(join(this.legacyUsersDir, f), 'utf8')) as string[]));
        } catch (err) {
          throw new LegacyStateError(`cannot import ${join(this.legacyUsersDir, f)} (state of an older mountgated): ${(err as Error).message}; move the state directory away to start afresh`);
        }
      }
    }
    for (const meta of metas) {
      db.importImage(
        { id: meta.id, ...(meta.name ? { name: meta.name } : {}), entries: meta.entries, bytes: meta.bytes, imageBytes: meta.imageBytes ?? statSync(this.imagePath(meta.id)).size, objects: meta.objects, owners: meta.owners },
        present,
        proofs,
      );
    }
    db.recount();
    return metas.length > 0 || proofs.size > 0;
  }

  private removeLegacy(): void {
    for (const id of readdirSync(this.imagesDir)) rmSync(join(this.imagesDir, id, 'meta.json'), { force: true });
    rmSync(this.legacyUsersDir, { recursive: true, force: true });
  }
}
