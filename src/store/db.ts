// The broker's bookkeeping in one SQLite database (store.db in the state
// directory, opened by the front alone, in exclusive locking mode): images,
// their owners, the objects each image needs with a reference count, the
// proofs of possession, and for every owner of an image how many of its
// objects that owner has still not proven. Every change is one transaction,
// so a crash at any point leaves the state of before or after it; the object
// files themselves are reconciled with the database at open.
//
// Invariants (each transaction keeps them):
//   objects.refs   = the number of images whose image_objects name the digest
//                    (a row with refs 0 does not exist);
//   owners.missing = the image's objects (uid, digest) has no proof for;
//   a proof exists only for a present object (it is dropped with the object);
//   usage of a uid = the sum of bytes + image_bytes over the images it owns;
//   a name is its owner's (names): one user's name for an image is nobody
//   else's business; an image may have several names of a uid (tags), a name
//   of a uid names one image, one of uid's listed owner rows;
//   an owner row is listed (the owner added the image itself) or kept for at
//   least one listed image of the same owner (kept rows); a kept row names
//   a listed image. A hidden image (listed 0) has no name, is not listed, and
//   counts toward its owner's usage like any other.
//
// An image whose last owner dropped it may stay a while without owners: its
// rows are then deleted a bounded number at a time (dropSome), so that the
// removal of a 100k-object image is not one transaction of seconds on the
// front's event loop. Nothing reads it meanwhile (every caller-facing query
// goes through owners); adding it again revives it; the reconciliation at
// open drops what a crash left of it.
//
// Commits do not wait for the disk on the front's event loop (an fsync there
// held every caller's call for as long as the disk took: 10-100 ms when
// uploads kept it busy). Each commit is written to the write-ahead log at
// once (synchronous = NORMAL: in WAL mode a crash loses at most the last
// commits, never consistency), and durable() fsyncs the log on the thread
// pool, once for every commit made while the previous fsync ran; the broker
// answers a call only after durable() (src/broker/service.ts), so what a
// reply says is on disk when the caller reads it.
//
// A new image is registered the same way round: its row and its owner in
// one transaction (the quota counts it from then on), its object rows a
// bounded number per transaction (addRows), and it is stored (listed,
// mountable) only once the last of them and its file are in. Until then
// images.objects is ahead of its rows; the reconciliation at open drops an
// image a crash left unstored.
import { fsync } from 'node:fs';
import { open } from 'node:fs/promises';
import Database from 'better-sqlite3';

export interface ImageRow {
  id: string;
  entries: number;
  /** Sum of the file sizes. */
  bytes: number;
  /** Size of the image's own metadata (its EROFS file): it counts toward the quota too. */
  imageBytes: number;
  /** Distinct content objects the image's files need. */
  objects: number;
  /** Is the image's file on disk (false while the first AddImage writes it)? */
  stored: boolean;
}

export interface OwnedImage extends ImageRow {
  /** This owner's name last given to it (what clients from before several names show). */
  name?: string;
  /** Every name this owner gives it, sorted. */
  names: string[];
  /** Whether the owner added it itself (false: it is only kept, hidden, for other images of the owner's). */
  listed: boolean;
  /** When this owner registered it (ISO time). */
  added: string;
  /** Objects of the image this owner has not proven. */
  missing: number;
}

/** An image to register, but for its object rows (begin takes this; addRows the rows). */
export interface ImageHead {
  id: string;
  name?: string;
  entries: number;
  bytes: number;
  imageBytes: number;
  /** How many distinct objects its rows will name. */
  objects: number;
  /** Registered hidden, kept for this listed image of the same owner (the manifest's keptFor). */
  keptFor?: string;
}

/** An image to register with its object rows at once (register: imports and tests). */
export interface NewImage extends Omit<ImageHead, 'objects'> {
  /** digest -> size, as the manifest says. */
  objects: Record<string, number>;
}

/** 2: names moved from images to owners (each owner names an image for itself). 3: hidden images kept for others. 4: several names per image of an owner (the names table). */
const schemaVersion = 4;

/** uid's names: each names one image uid lists (rowid: the order the names were given). */
const namesTable = `
CREATE TABLE names (
  uid INTEGER NOT NULL,
  name TEXT NOT NULL,
  image_id TEXT NOT NULL,
  UNIQUE (uid, name),
  FOREIGN KEY (uid, image_id) REFERENCES owners(uid, image_id)
) STRICT;
CREATE INDEX names_by_image ON names(uid, image_id);
`;

/** Which hidden image (kept_id) uid keeps for which of its listed images (image_id). */
const keptTable = `
CREATE TABLE kept (
  uid INTEGER NOT NULL,
  image_id TEXT NOT NULL,
  kept_id TEXT NOT NULL,
  PRIMARY KEY (uid, image_id, kept_id),
  FOREIGN KEY (uid, image_id) REFERENCES owners(uid, image_id),
  FOREIGN KEY (uid, kept_id) REFERENCES owners(uid, image_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX kept_by_kept ON kept(uid, kept_id);
`;

const schema = `
CREATE TABLE images (
  id TEXT PRIMARY KEY,
  entries INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  image_bytes INTEGER NOT NULL,
  objects INTEGER NOT NULL,
  stored INTEGER NOT NULL
) STRICT;
CREATE TABLE owners (
  uid INTEGER NOT NULL,
  image_id TEXT NOT NULL REFERENCES images(id),
  added TEXT NOT NULL,
  missing INTEGER NOT NULL,
  listed INTEGER NOT NULL DEFAULT 1,
  PRIMARY KEY (uid, image_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX owners_by_image ON owners(image_id);
${keptTable}${namesTable}CREATE TABLE objects (
  digest TEXT PRIMARY KEY,
  refs INTEGER NOT NULL,
  present INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE TABLE image_objects (
  image_id TEXT NOT NULL REFERENCES images(id),
  digest TEXT NOT NULL REFERENCES objects(digest),
  size INTEGER NOT NULL,
  PRIMARY KEY (image_id, digest)
) STRICT, WITHOUT ROWID;
CREATE INDEX image_objects_by_digest ON image_objects(digest, image_id);
CREATE TABLE proofs (
  uid INTEGER NOT NULL,
  digest TEXT NOT NULL REFERENCES objects(digest),
  PRIMARY KEY (uid, digest)
) STRICT, WITHOUT ROWID;
CREATE INDEX proofs_by_digest ON proofs(digest);
`;

/**
 * The rows of one addRows call that the image does not have yet, staged so
 * that a few set-based statements add them (a reference each, the rows, the
 * owners' missing counts) instead of four statements a row. Per connection,
 * in memory, not part of the database file; filled and emptied inside the
 * call's transaction.
 */
const newRowsTable = 'CREATE TEMP TABLE IF NOT EXISTS new_rows (digest TEXT PRIMARY KEY, size INTEGER NOT NULL) STRICT, WITHOUT ROWID';

interface RawImage {
  id: string;
  /** uid's names, a JSON array in the order given. */
  names?: string | null;
  entries: number;
  bytes: number;
  image_bytes: number;
  objects: number;
  stored: number;
  added?: string;
  missing?: number;
  listed?: number;
}

function imageRow(r: RawImage): ImageRow {
  return { id: r.id, entries: r.entries, bytes: r.bytes, imageBytes: r.image_bytes, objects: r.objects, stored: r.stored === 1 };
}

function ownedRow(r: RawImage): OwnedImage {
  const given = r.names ? (JSON.parse(r.names) as string[]) : [];
  const last = given[given.length - 1];
  return { ...imageRow(r), ...(last !== undefined ? { name: last } : {}), names: [...given].sort(), listed: r.listed === 1, added: r.added!, missing: r.missing! };
}

/** uid's names of the image of the row (o: its owner row), in the order given. */
const namesOf = '(SELECT json_group_array(n.name ORDER BY n.rowid) FROM names n WHERE n.uid = o.uid AND n.image_id = o.image_id) AS names';

/** Schema version 1 kept one name per image, the first adder's: it becomes each owner's own. */
const fromVersion1 = `
ALTER TABLE owners ADD COLUMN name TEXT;
UPDATE owners SET name = (SELECT name FROM images WHERE images.id = owners.image_id);
ALTER TABLE images DROP COLUMN name;
UPDATE owners SET name = NULL WHERE name IS NOT NULL AND EXISTS (
  SELECT 1 FROM owners o2 WHERE o2.uid = owners.uid AND o2.name = owners.name
    AND (o2.added > owners.added OR (o2.added = owners.added AND o2.image_id > owners.image_id)));
CREATE UNIQUE INDEX owners_names ON owners(uid, name) WHERE name IS NOT NULL;
`;

/** Schema version 2 had no hidden images: every owner row is listed. */
const fromVersion2 = `
ALTER TABLE owners ADD COLUMN listed INTEGER NOT NULL DEFAULT 1;
${keptTable}`;

/** Schema version 3 had one name per image of an owner (owners.name): each becomes a row of names, in the order the owners added their images. */
const fromVersion3 = `
${namesTable}INSERT INTO names (uid, name, image_id) SELECT uid, name, image_id FROM owners WHERE name IS NOT NULL AND listed = 1 ORDER BY added, image_id;
DROP INDEX owners_names;
ALTER TABLE owners DROP COLUMN name;
`;

/** What brings a database of version k to k + 1. */
const upgrades: Record<number, string> = { 1: fromVersion1, 2: fromVersion2, 3: fromVersion3 };

export class StoreDb {
  private readonly db: Database.Database;
  private q!: ReturnType<StoreDb['statements']>;
  private readonly walPath: string;
  private changes!: Database.Statement;
  /** total_changes() as of the start of the last fsync that finished. */
  private syncedChanges = 0;
  /** The fsync under way, and the one queued behind it for commits it may not cover. */
  private syncing: Promise<void> | undefined;
  private queued: Promise<void> | undefined;

  /** Opens (creating when new) the database at `path`; `onCreate` runs inside the transaction that creates the schema (to import an older state). */
  constructor(
    path: string,
    onCreate?: (db: StoreDb) => void,
    /** How the log is synced (a test counts the calls). */
    private readonly syncFd: (fd: number, done: (err: NodeJS.ErrnoException | null) => void) => void = fsync,
  ) {
    // A second broker on the same state waits a moment for the lock, then is refused.
    this.db = new Database(path, { timeout: 1000 });
    this.walPath = `${path}-wal`;
    try {
      this.open(path, onCreate);
    } catch (err) {
      if (this.db.open) this.db.close();
      throw err;
    }
  }

  private open(path: string, onCreate?: (db: StoreDb) => void): void {
    // One writer, the front: no shared-memory file, and a second front cannot open it.
    this.db.pragma('locking_mode = EXCLUSIVE');
    this.db.pragma('journal_mode = WAL');
    // Opening (creating, upgrading) waits for the disk; from then on durable() does, off the event loop.
    this.db.pragma('synchronous = FULL');
    this.db.pragma('foreign_keys = ON');
    // Statement journals and sorts in memory: no temp file (a deleted one, held open) outlives a big transaction.
    this.db.pragma('temp_store = MEMORY');
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version > schemaVersion) throw new Error(`${path} has schema version ${version}; this mountgated knows only up to ${schemaVersion} (a newer mountgated wrote it)`);
    if (version > 0 && version < schemaVersion) {
      this.db.exec('BEGIN IMMEDIATE');
      try {
        for (let v = version; v < schemaVersion; v++) this.db.exec(upgrades[v]!);
        this.db.pragma(`user_version = ${schemaVersion}`);
        this.db.exec('COMMIT');
      } catch (err) {
        this.db.exec('ROLLBACK');
        throw err;
      }
    }
    this.db.exec(newRowsTable);
    const create = version === 0;
    // A new database is made in one transaction with whatever `onCreate` imports: a failed import leaves nothing.
    if (create) {
      this.db.exec('BEGIN IMMEDIATE');
      this.db.exec(schema);
    }
    this.q = this.statements();
    if (create) {
      try {
        onCreate?.(this);
        this.db.pragma(`user_version = ${schemaVersion}`);
        this.db.exec('COMMIT');
      } catch (err) {
        this.db.exec('ROLLBACK');
        throw err;
      }
    }
    this.db.pragma('synchronous = NORMAL');
    this.changes = this.db.prepare('SELECT total_changes()').pluck();
    this.syncedChanges = this.changes.get() as number;
  }

  /**
   * Resolves once every commit made so far is on disk: fsyncs the
   * write-ahead log on the thread pool (a checkpoint, which SQLite runs
   * itself now and then, syncs what it moves into the database file).
   * Commits made while an fsync runs share the next one; nothing to do when
   * nothing changed since the last.
   */
  durable(): Promise<void> {
    const now = this.changes.get() as number;
    if (now === this.syncedChanges) return Promise.resolve();
    if (!this.syncing) return (this.syncing = this.syncLog(now));
    this.queued ??= this.syncing.then(
      () => {
        this.queued = undefined;
        return this.durable();
      },
      () => {
        this.queued = undefined;
        return this.durable();
      },
    );
    return this.queued;
  }

  private async syncLog(changes: number): Promise<void> {
    try {
      // Opened for each sync, off the loop: no fd of the broker's stays on it between calls, and the
      // sync is always of the log file that is there now.
      const log = await open(this.walPath, 'r');
      try {
        await new Promise<void>((resolve, reject) => this.syncFd(log.fd, (err) => (err ? reject(err) : resolve())));
      } finally {
        await log.close();
      }
      this.syncedChanges = Math.max(this.syncedChanges, changes);
    } finally {
      this.syncing = undefined;
    }
  }

  private statements() {
    const d = this.db;
    return {
      image: d.prepare<[string]>('SELECT * FROM images WHERE id = ?'),
      owned: d.prepare<[string, number]>(`SELECT i.*, o.added, o.missing, ${namesOf}, o.listed FROM images i JOIN owners o ON o.image_id = i.id WHERE i.id = ? AND o.uid = ?`),
      listFor: d.prepare<[number]>(`SELECT i.*, o.added, o.missing, ${namesOf}, o.listed FROM owners o JOIN images i ON i.id = o.image_id WHERE o.uid = ? AND o.listed = 1 ORDER BY i.id`),
      named: d.prepare<[number, string]>('SELECT image_id FROM names WHERE uid = ? AND name = ?'),
      usage: d.prepare<[number, string]>(
        'SELECT count(*) AS images, coalesce(sum(o.listed = 0), 0) AS hidden, coalesce(sum(i.bytes + i.image_bytes), 0) AS bytes FROM owners o JOIN images i ON i.id = o.image_id WHERE o.uid = ? AND i.id <> ?',
      ),
      // Added by the owner itself (again): listed from now on.
      setListed: d.prepare<[number, string]>('UPDATE owners SET listed = 1 WHERE uid = ? AND image_id = ?'),
      insertHiddenOwner: d.prepare<[number, string, string, string, number]>(
        'INSERT INTO owners (uid, image_id, added, missing, listed) VALUES (?, ?, ?, (SELECT count(*) FROM image_objects io WHERE io.image_id = ? AND NOT EXISTS (SELECT 1 FROM proofs p WHERE p.uid = ? AND p.digest = io.digest)), 0)',
      ),
      insertKept: d.prepare<[number, string, string]>('INSERT OR IGNORE INTO kept (uid, image_id, kept_id) VALUES (?, ?, ?)'),
      keptFor: d.prepare<[number, string]>('SELECT kept_id FROM kept WHERE uid = ? AND image_id = ?'),
      deleteKeptFor: d.prepare<[number, string]>('DELETE FROM kept WHERE uid = ? AND image_id = ?'),
      keepers: d.prepare<[number, string]>('SELECT count(*) AS n FROM kept WHERE uid = ? AND kept_id = ?'),
      hide: d.prepare<[number, string]>('UPDATE owners SET listed = 0 WHERE uid = ? AND image_id = ?'),
      deleteNames: d.prepare<[number, string]>('DELETE FROM names WHERE uid = ? AND image_id = ?'),
      deleteNamesOf: d.prepare<[string]>('DELETE FROM names WHERE image_id = ?'),
      deleteName: d.prepare<[number, string]>('DELETE FROM names WHERE uid = ? AND name = ?'),
      nameCount: d.prepare<[number, string]>('SELECT count(*) AS n FROM names WHERE uid = ? AND image_id = ?'),
      deleteKeptOf: d.prepare<[string, string]>('DELETE FROM kept WHERE image_id = ? OR kept_id = ?'),
      orphans: d.prepare('SELECT uid, image_id FROM owners o WHERE o.listed = 0 AND NOT EXISTS (SELECT 1 FROM kept k WHERE k.uid = o.uid AND k.kept_id = o.image_id)'),
      insertImage: d.prepare('INSERT INTO images (id, entries, bytes, image_bytes, objects, stored) VALUES (?, ?, ?, ?, ?, 0)'),
      // A name moves to the image last given it, as a tag does (one image of uid's has it), and counts as the last one given.
      setName: d.prepare<[number, string, string]>('INSERT OR REPLACE INTO names (uid, name, image_id) VALUES (?, ?, ?)'),
      markStored: d.prepare<[string]>('UPDATE images SET stored = 1 WHERE id = ?'),
      insertOwner: d.prepare<[number, string, string, string, number]>(
        'INSERT INTO owners (uid, image_id, added, missing) VALUES (?, ?, ?, (SELECT count(*) FROM image_objects io WHERE io.image_id = ? AND NOT EXISTS (SELECT 1 FROM proofs p WHERE p.uid = ? AND p.digest = io.digest)))',
      ),
      deleteOwner: d.prepare<[number, string]>('DELETE FROM owners WHERE uid = ? AND image_id = ?'),
      ownerCount: d.prepare<[string]>('SELECT count(*) AS n FROM owners WHERE image_id = ?'),
      imageDigests: d.prepare<[string]>('SELECT digest FROM image_objects WHERE image_id = ?'),
      unrefImageObjects: d.prepare<[string]>('UPDATE objects SET refs = refs - 1 WHERE digest IN (SELECT digest FROM image_objects WHERE image_id = ?)'),
      deleteImageObjects: d.prepare<[string]>('DELETE FROM image_objects WHERE image_id = ?'),
      deleteImage: d.prepare<[string]>('DELETE FROM images WHERE id = ?'),
      unreferenced: d.prepare('SELECT digest, present FROM objects WHERE refs <= 0'),
      deleteUnreferencedProofs: d.prepare('DELETE FROM proofs WHERE digest IN (SELECT digest FROM objects WHERE refs <= 0)'),
      deleteUnreferenced: d.prepare('DELETE FROM objects WHERE refs <= 0'),
      missingOf: d.prepare<[string, number, string, number]>(
        'SELECT io.digest, io.size, ob.present FROM image_objects io JOIN objects ob ON ob.digest = io.digest WHERE io.image_id = ? AND NOT EXISTS (SELECT 1 FROM proofs p WHERE p.uid = ? AND p.digest = io.digest) AND io.digest > ? ORDER BY io.digest LIMIT ?',
      ),
      someMissingOf: d.prepare<[string, number, number]>(
        'SELECT io.digest FROM image_objects io WHERE io.image_id = ? AND NOT EXISTS (SELECT 1 FROM proofs p WHERE p.uid = ? AND p.digest = io.digest) ORDER BY io.digest LIMIT ?',
      ),
      pendingImages: d.prepare<[number]>('SELECT image_id FROM owners WHERE uid = ? AND missing > 0'),
      pendingPage: d.prepare<[string, string, number, number]>(
        'SELECT io.digest, io.size, ob.present FROM image_objects io JOIN objects ob ON ob.digest = io.digest WHERE io.image_id = ? AND io.digest > ? AND NOT EXISTS (SELECT 1 FROM proofs p WHERE p.uid = ? AND p.digest = io.digest) ORDER BY io.digest LIMIT ?',
      ),
      pendingFor: d.prepare<[number, number]>(
        'SELECT io.digest, io.size, ob.present FROM owners o JOIN image_objects io ON io.image_id = o.image_id JOIN objects ob ON ob.digest = io.digest WHERE o.uid = ? AND o.missing > 0 AND NOT EXISTS (SELECT 1 FROM proofs p WHERE p.uid = ? AND p.digest = io.digest)',
      ),
      wanted: d.prepare<[number, string]>('SELECT io.size FROM owners o JOIN image_objects io ON io.image_id = o.image_id WHERE o.uid = ? AND io.digest = ? LIMIT 1'),
      present: d.prepare<[string]>('SELECT present FROM objects WHERE digest = ?'),
      setPresent: d.prepare<[string]>('UPDATE objects SET present = 1 WHERE digest = ? AND present = 0'),
      insertProof: d.prepare<[number, string]>('INSERT OR IGNORE INTO proofs (uid, digest) VALUES (?, ?)'),
      proven: d.prepare<[number, string]>('SELECT 1 FROM proofs WHERE uid = ? AND digest = ?'),
      decrementMissing: d.prepare<[number, string]>('UPDATE owners SET missing = missing - 1 WHERE uid = ? AND image_id IN (SELECT image_id FROM image_objects WHERE digest = ?)'),
      // An image being dropped (no owner) shares nothing any more.
      sharedHas: d.prepare<[string, string]>('SELECT 1 FROM image_objects io WHERE io.image_id = ? AND io.digest = ? AND EXISTS (SELECT 1 FROM owners o WHERE o.image_id = io.image_id)'),
      allPresent: d.prepare('SELECT digest FROM objects WHERE present = 1'),
      hasRow: d.prepare<[string]>('SELECT 1 FROM objects WHERE digest = ?'),
      unstored: d.prepare('SELECT id FROM images WHERE stored = 0'),
      allImageIds: d.prepare('SELECT id FROM images'),
      recount: d.prepare(
        'UPDATE owners SET missing = (SELECT count(*) FROM image_objects io WHERE io.image_id = owners.image_id AND NOT EXISTS (SELECT 1 FROM proofs p WHERE p.uid = owners.uid AND p.digest = io.digest))',
      ),
      dropProofsOf: d.prepare<[string]>('DELETE FROM proofs WHERE digest = ?'),
      setAbsent: d.prepare<[string]>('UPDATE objects SET present = 0 WHERE digest = ?'),
      deleteOwnersOf: d.prepare<[string]>('DELETE FROM owners WHERE image_id = ?'),
      ownerless: d.prepare('SELECT id FROM images i WHERE NOT EXISTS (SELECT 1 FROM owners o WHERE o.image_id = i.id)'),
      someImageDigests: d.prepare<[string, number]>('SELECT digest FROM image_objects WHERE image_id = ? LIMIT ?'),
      unrefObject: d.prepare<[string]>('UPDATE objects SET refs = refs - 1 WHERE digest = ? RETURNING refs, present'),
      deleteImageObject: d.prepare<[string, string]>('DELETE FROM image_objects WHERE image_id = ? AND digest = ?'),
      deleteObject: d.prepare<[string]>('DELETE FROM objects WHERE digest = ?'),
      unstore: d.prepare<[string]>('UPDATE images SET stored = 0 WHERE id = ?'),
      clearNewRows: d.prepare('DELETE FROM temp.new_rows'),
      // Rows the image has already are skipped (reviving an image being dropped, the rows already deleted come back);
      // of a digest given twice, the first row counts.
      stageNewRows: d.prepare<[string, string]>(
        'INSERT OR IGNORE INTO temp.new_rows (digest, size) SELECT j.value ->> 0, j.value ->> 1 FROM json_each(?) j WHERE NOT EXISTS (SELECT 1 FROM image_objects io WHERE io.image_id = ? AND io.digest = j.value ->> 0) ORDER BY j.key',
      ),
      // One new row per digest: one more reference each (WHERE true: an upsert's SELECT needs a WHERE to parse).
      refNewRows: d.prepare('INSERT INTO objects (digest, refs, present) SELECT digest, 1, 0 FROM temp.new_rows WHERE true ON CONFLICT (digest) DO UPDATE SET refs = refs + 1'),
      insertNewRows: d.prepare<[string]>('INSERT INTO image_objects (image_id, digest, size) SELECT ?, digest, size FROM temp.new_rows'),
      countNewMissing: d.prepare<[string]>(
        'UPDATE owners SET missing = missing + (SELECT count(*) FROM temp.new_rows n WHERE NOT EXISTS (SELECT 1 FROM proofs p WHERE p.uid = owners.uid AND p.digest = n.digest)) WHERE image_id = ?',
      ),
    };
  }

  /** Frees what SQLite caches for this connection (its page cache): after a big transaction, memory goes back at once. */
  shrinkMemory(): void {
    this.db.pragma('shrink_memory');
  }

  close(): void {
    this.db.close();
  }

  /** Runs `fn` as one transaction (nested calls join the outer one). */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  image(id: string): ImageRow | undefined {
    const r = this.q.image.get(id) as RawImage | undefined;
    return r && imageRow(r);
  }

  /** The image if `uid` registered it. */
  ownedBy(id: string, uid: number): OwnedImage | undefined {
    const r = this.q.owned.get(id, uid) as RawImage | undefined;
    return r && ownedRow(r);
  }

  listFor(uid: number): OwnedImage[] {
    return (this.q.listFor.all(uid) as RawImage[]).map(ownedRow);
  }

  /** What uid keeps in the store (images, hidden ones among them, and bytes of content and metadata), not counting image `except`. */
  usage(uid: number, except = ''): { images: number; hidden: number; bytes: number } {
    return this.q.usage.get(uid, except) as { images: number; hidden: number; bytes: number };
  }

  /**
   * Registers uid for an image, creating it (not yet stored) when new, in one
   * transaction, with every object row. Returns whether the image is new (its
   * file is still to be written). The broker uses begin and addRows instead:
   * this is the whole of it at once, for imports and tests.
   */
  register(image: NewImage, uid: number, added = new Date().toISOString()): { created: boolean; owned: OwnedImage } {
    return this.transaction(() => {
      const rows = Object.entries(image.objects);
      const r = this.begin({ ...image, objects: rows.length }, uid, added);
      if (r.created) this.addRows(image.id, rows);
      return { created: r.created, owned: this.ownedBy(image.id, uid)! };
    });
  }

  /**
   * Registers uid for an image in one transaction whose work does not grow
   * with the image: a new image (or one being dropped, revived) gets its row,
   * not stored, and uid its owner row (counted toward its usage from now on);
   * its object rows follow through addRows, a bounded number per transaction,
   * and markStored says it is whole. `created`: the rows and the file are to
   * be made. Until then the image is not stored: not listed, not mountable,
   * and dropped by the reconciliation after a crash.
   */
  begin(image: ImageHead, uid: number, added = new Date().toISOString()): { created: boolean; owned: OwnedImage } {
    return this.transaction(() => {
      let existing = this.image(image.id);
      if (existing && (this.q.ownerCount.get(image.id) as { n: number }).n === 0) {
        // Being dropped (its file is gone too): it comes back whole (addRows puts back the rows dropped), to be stored anew.
        this.q.unstore.run(image.id);
        existing = undefined;
      } else if (!existing) {
        this.q.insertImage.run(image.id, image.entries, image.bytes, image.imageBytes, image.objects);
      }
      const had = this.q.owned.get(image.id, uid) !== undefined;
      if (image.keptFor) {
        // Hidden, unless uid added it itself too; never named.
        if (!had) this.q.insertHiddenOwner.run(uid, image.id, added, image.id, uid);
        this.q.insertKept.run(uid, image.keptFor, image.id);
        return { created: !existing, owned: this.ownedBy(image.id, uid)! };
      }
      if (!had) this.q.insertOwner.run(uid, image.id, added, image.id, uid);
      else this.q.setListed.run(uid, image.id);
      // Added again under another name: the image has that name too (for uid alone), and keeps its others.
      if (image.name) this.q.setName.run(uid, image.name, image.id);
      return { created: !existing, owned: this.ownedBy(image.id, uid)! };
    });
  }

  /** The image uid gives `name` to, if any (always one uid lists). */
  named(uid: number, name: string): string | undefined {
    return (this.q.named.get(uid, name) as { image_id: string } | undefined)?.image_id;
  }

  /**
   * Drops uid's name `name`; when it was the last name of its image, uid's
   * registration goes too (as unregister does, `later` as there). Returns the
   * image it named (undefined: uid has no such name) and what unregister
   * returns when it ran.
   */
  removeName(uid: number, name: string, later = false): { id: string; unregistered?: ReturnType<StoreDb['unregister']> } | undefined {
    return this.transaction(() => {
      const id = this.named(uid, name);
      if (id === undefined) return undefined;
      this.q.deleteName.run(uid, name);
      if ((this.q.nameCount.get(uid, id) as { n: number }).n > 0) return { id };
      return { id, unregistered: this.unregister(id, uid, later) };
    });
  }

  /**
   * Adds object rows of an image begin made, in one transaction: each row
   * not there yet takes a reference on its object and counts as missing for
   * every owner without a proof of it, so every invariant holds at the
   * commit (only images.objects is ahead of the rows until the last). Lost
   * in a crash, they leave the image unstored, dropped at open. Returns
   * false, adding nothing, when the image went or lost its owners meanwhile
   * (removed while being added: its rows are being dropped). What a commit
   * writes is the pages the rows land on: rows of neighbouring digests (a
   * chunk of the sorted list the broker has) share a few dozen, scattered
   * ones take about four pages each.
   */
  addRows(id: string, rows: readonly (readonly [digest: string, size: number])[]): boolean {
    return this.transaction(() => {
      if (!this.image(id) || (this.q.ownerCount.get(id) as { n: number }).n === 0) return false;
      this.putRows(id, rows);
      return true;
    });
  }

  /**
   * The rows of addRows (and of the import), in the same few statements
   * whatever their number: the rows the image lacks are staged (new_rows),
   * each takes a reference on its object (made, absent, when new), becomes a
   * row of the image, and counts as missing for every owner of the image
   * without a proof of it. Part of the caller's transaction. new_rows is
   * emptied before (whatever an earlier call left) and after (an import's
   * 100k rows do not stay in memory).
   */
  private putRows(id: string, rows: readonly (readonly [digest: string, size: number])[]): void {
    this.q.clearNewRows.run();
    if (this.q.stageNewRows.run(JSON.stringify(rows), id).changes === 0) return;
    this.q.refNewRows.run();
    this.q.insertNewRows.run(id);
    this.q.countNewMissing.run(id);
    this.q.clearNewRows.run();
  }

  markStored(id: string): void {
    this.q.markStored.run(id);
  }

  /**
   * Drops uid's registration of a listed image, and of the hidden images kept
   * only for it; an image whose last registration goes is removed with every
   * object no other image needs. (An image uid also keeps for another of its
   * images stays, hidden.) Returns whether the image itself is gone, the ids
   * of every image gone (to delete from disk) and the digests of present
   * objects to delete. With `later`, an image gone keeps its rows, without
   * owners, for dropSome to delete a bounded number at a time (`dropped` is
   * then empty); its owners, and with them every quota, are freed at once.
   */
  unregister(id: string, uid: number, later = false): { imageGone: boolean; gone: string[]; dropped: string[] } {
    return this.transaction(() => {
      const kept = (this.q.keptFor.all(uid, id) as { kept_id: string }[]).map((r) => r.kept_id);
      this.q.deleteKeptFor.run(uid, id);
      const gone: string[] = [];
      const dropped: string[] = [];
      const release = (image: string) => {
        // Hidden or gone, it has no name of uid's any more.
        this.q.deleteNames.run(uid, image);
        if ((this.q.keepers.get(uid, image) as { n: number }).n > 0) {
          this.q.hide.run(uid, image);
          return;
        }
        this.q.deleteOwner.run(uid, image);
        if ((this.q.ownerCount.get(image) as { n: number }).n > 0) return;
        gone.push(image);
        if (later) this.q.deleteKeptOf.run(image, image);
        else dropped.push(...this.dropImage(image));
      };
      release(id);
      for (const k of kept) if (this.ownedBy(k, uid)?.listed === false) release(k);
      return { imageGone: gone.includes(id), gone, dropped };
    });
  }

  /** Deletes an image with all its rows; returns the present objects no image needs any more. */
  private dropImage(id: string): string[] {
    this.q.deleteKeptOf.run(id, id);
    this.q.deleteNamesOf.run(id);
    this.q.deleteOwnersOf.run(id);
    this.q.unrefImageObjects.run(id);
    this.q.deleteImageObjects.run(id);
    this.q.deleteImage.run(id);
    const gone = this.q.unreferenced.all() as { digest: string; present: number }[];
    this.q.deleteUnreferencedProofs.run();
    this.q.deleteUnreferenced.run();
    return gone.filter((g) => g.present === 1).map((g) => g.digest);
  }

  /**
   * Deletes up to `limit` object rows of an image without owners (one an
   * unregister left for later), and the image with the last of them, in one
   * transaction. Returns the present objects no image needs any more, and
   * whether the image is done with (gone, or owned again: revived).
   */
  dropSome(id: string, limit: number): { done: boolean; dropped: string[] } {
    return this.transaction(() => {
      if (!this.image(id) || (this.q.ownerCount.get(id) as { n: number }).n > 0) return { done: true, dropped: [] };
      const digests = (this.q.someImageDigests.all(id, limit) as { digest: string }[]).map((r) => r.digest);
      const dropped: string[] = [];
      for (const d of digests) {
        this.q.deleteImageObject.run(id, d);
        const r = this.q.unrefObject.get(d) as { refs: number; present: number };
        if (r.refs > 0) continue;
        this.q.dropProofsOf.run(d);
        this.q.deleteObject.run(d);
        if (r.present === 1) dropped.push(d);
      }
      if (digests.length < limit) {
        this.q.deleteImage.run(id);
        return { done: true, dropped };
      }
      return { done: false, dropped };
    });
  }

  /** Images without owners: being dropped (dropSome), or left so by a crash. */
  ownerless(): string[] {
    return (this.q.ownerless.all() as { id: string }[]).map((r) => r.id);
  }

  /**
   * The image's objects uid has not proven, sorted. `sharedIds`: images
   * whose objects need no proof when the store holds them.
   */
  missingFor(id: string, uid: number, sharedIds: readonly string[] = []): string[] {
    return this.missingPage(id, uid, sharedIds, '', -1).digests;
  }

  /**
   * One page of missingFor: of the next `limit` rows after digest `after`
   * (in the image's key order), those still missing; `next` is the digest to
   * go on after, undefined once there is no more.
   */
  missingPage(id: string, uid: number, sharedIds: readonly string[], after: string, limit: number): { digests: string[]; next?: string } {
    const rows = this.q.missingOf.all(id, uid, after, limit) as { digest: string; present: number }[];
    const digests = rows.filter((r) => !(r.present === 1 && this.inShared(r.digest, sharedIds))).map((r) => r.digest);
    return limit >= 0 && rows.length === limit ? { digests, next: rows.at(-1)!.digest } : { digests };
  }

  /** The first `limit` objects of the image uid has not proven, sorted (without shared images: their count is the owner's missing). */
  someMissingFor(id: string, uid: number, limit: number): string[] {
    return (this.q.someMissingOf.all(id, uid, limit) as { digest: string }[]).map((r) => r.digest);
  }

  private inShared(digest: string, sharedIds: readonly string[]): boolean {
    return sharedIds.some((s) => this.q.sharedHas.get(s, digest) !== undefined);
  }

  /** Objects uid may upload now (missing from one of its images): digest -> size and whether the store already holds it. */
  pendingFor(uid: number): Map<string, { size: number; present: boolean }> {
    const out = new Map<string, { size: number; present: boolean }>();
    for (const r of this.q.pendingFor.iterate(uid, uid) as Iterable<{ digest: string; size: number; present: number }>) out.set(r.digest, { size: r.size, present: r.present === 1 });
    return out;
  }

  /** uid's images with objects it has not proven. */
  pendingImages(uid: number): string[] {
    return (this.q.pendingImages.all(uid) as { image_id: string }[]).map((r) => r.image_id);
  }

  /** One page of pendingFor, of one image: the next `limit` objects after digest `after` uid has not proven. */
  pendingPage(id: string, uid: number, after: string, limit: number): { digest: string; size: number; present: number }[] {
    return this.q.pendingPage.all(id, after, uid, limit) as { digest: string; size: number; present: number }[];
  }

  /** The size one of uid's images gives the object; undefined when none of them needs it. */
  wantedSize(uid: number, digest: string): number | undefined {
    return (this.q.wanted.get(uid, digest) as { size: number } | undefined)?.size;
  }

  isPresent(digest: string): boolean {
    return (this.q.present.get(digest) as { present: number } | undefined)?.present === 1;
  }

  hasProven(uid: number, digest: string): boolean {
    return this.q.proven.get(uid, digest) !== undefined;
  }

  /** The object is in the store (its file has its final name) and uid proved it has its bytes. Part of the caller's transaction. */
  recordPossession(uid: number, digest: string): void {
    this.q.setPresent.run(digest);
    if (this.q.insertProof.run(uid, digest).changes === 1) this.q.decrementMissing.run(uid, digest);
  }

  /**
   * Brings the database in line with the files after a crash: images whose
   * file was never completed are dropped (their AddImage was never
   * answered), objects recorded present whose file is gone lose that and
   * their proofs, and files the database marks absent but an image needs are
   * taken as present (they were hashed and synced before they got their
   * name). Returns the digests of files no image needs and the ids of images
   * to delete from disk.
   */
  reconcile(files: Set<string>, imageDirs: Set<string>): { strayFiles: string[]; strayImages: string[]; changed: number } {
    return this.transaction(() => {
      let changed = 0;
      const strayImages: string[] = [];
      const dropped: string[] = [];
      // Removals a crash interrupted (their rows were being deleted a few at a time): finished now.
      for (const id of this.ownerless()) {
        dropped.push(...this.dropImage(id));
        strayImages.push(id);
        changed++;
      }
      for (const { id } of this.q.unstored.all() as { id: string }[]) {
        dropped.push(...this.dropImage(id));
        strayImages.push(id);
        changed++;
      }
      for (const { id } of this.q.allImageIds.all() as { id: string }[]) {
        if (!imageDirs.has(id)) {
          // Its file is gone (a removal that crashed after the unlink, or a hand): the image cannot be mounted.
          dropped.push(...this.dropImage(id));
          changed++;
        }
      }
      // Hidden registrations whose listed images went with them go too.
      for (let o = this.q.orphans.all() as { uid: number; image_id: string }[]; o.length > 0; o = this.q.orphans.all() as { uid: number; image_id: string }[]) {
        for (const { uid, image_id } of o) {
          this.q.deleteNames.run(uid, image_id);
          this.q.deleteOwner.run(uid, image_id);
          changed++;
          if ((this.q.ownerCount.get(image_id) as { n: number }).n === 0) dropped.push(...this.dropImage(image_id));
        }
      }
      const known = new Set<string>(this.q.allImageIds.all().map((r) => (r as { id: string }).id));
      for (const dir of imageDirs) if (!known.has(dir)) strayImages.push(dir);
      let proofsChanged = false;
      for (const { digest } of this.q.allPresent.all() as { digest: string }[]) {
        if (files.has(digest)) continue;
        this.q.setAbsent.run(digest);
        this.q.dropProofsOf.run(digest);
        proofsChanged = true;
        changed++;
      }
      const strayFiles: string[] = [...dropped.filter((d) => files.has(d))];
      for (const digest of files) {
        if (this.q.hasRow.get(digest) === undefined) strayFiles.push(digest);
        else if (!this.isPresent(digest)) {
          this.q.setPresent.run(digest);
          changed++;
        }
      }
      if (proofsChanged || changed > 0) this.q.recount.run();
      return { strayFiles: [...new Set(strayFiles)], strayImages: [...new Set(strayImages)], changed };
    });
  }

  /** For tests and the migration: checks every invariant; returns the violations (none when the store is consistent). */
  check(): string[] {
    const bad: string[] = [];
    const rows = <T>(sql: string) => this.db.prepare(sql).all() as T[];
    for (const r of rows<{ digest: string; refs: number; actual: number }>(
      'SELECT ob.digest, ob.refs, (SELECT count(*) FROM image_objects io WHERE io.digest = ob.digest) AS actual FROM objects ob WHERE ob.refs <> (SELECT count(*) FROM image_objects io WHERE io.digest = ob.digest) OR ob.refs <= 0',
    )) bad.push(`object ${r.digest}: refs ${r.refs}, referenced by ${r.actual}`);
    for (const r of rows<{ uid: number; image_id: string; missing: number; actual: number }>(
      'SELECT o.uid, o.image_id, o.missing, (SELECT count(*) FROM image_objects io WHERE io.image_id = o.image_id AND NOT EXISTS (SELECT 1 FROM proofs p WHERE p.uid = o.uid AND p.digest = io.digest)) AS actual FROM owners o WHERE o.missing <> actual',
    )) bad.push(`owner ${r.uid} of ${r.image_id}: missing ${r.missing}, actually ${r.actual}`);
    for (const r of rows<{ uid: number; digest: string }>('SELECT p.uid, p.digest FROM proofs p JOIN objects ob ON ob.digest = p.digest WHERE ob.present = 0')) bad.push(`proof of ${r.uid} for absent object ${r.digest}`);
    for (const r of rows<{ id: string }>('SELECT id FROM images i WHERE NOT EXISTS (SELECT 1 FROM owners o WHERE o.image_id = i.id)')) bad.push(`image ${r.id} has no owner`);
    for (const r of rows<{ id: string; objects: number; actual: number }>('SELECT i.id, i.objects, (SELECT count(*) FROM image_objects io WHERE io.image_id = i.id) AS actual FROM images i WHERE i.stored = 1 AND i.objects <> actual')) bad.push(`image ${r.id}: ${r.objects} objects recorded, ${r.actual} rows`);
    for (const r of rows<{ uid: number; image_id: string }>('SELECT uid, image_id FROM owners o WHERE o.listed = 0 AND NOT EXISTS (SELECT 1 FROM kept k WHERE k.uid = o.uid AND k.kept_id = o.image_id)')) bad.push(`owner ${r.uid} of ${r.image_id}: hidden, but kept for none of its images`);
    for (const r of rows<{ uid: number; image_id: string }>('SELECT k.uid, k.image_id FROM kept k JOIN owners o ON o.uid = k.uid AND o.image_id = k.image_id WHERE o.listed = 0')) bad.push(`owner ${r.uid} keeps images for ${r.image_id}, which is hidden`);
    for (const r of rows<{ uid: number; image_id: string; name: string }>('SELECT n.uid, n.image_id, n.name FROM names n JOIN owners o ON o.uid = n.uid AND o.image_id = n.image_id WHERE o.listed = 0')) bad.push(`owner ${r.uid} of ${r.image_id}: hidden, yet named ${JSON.stringify(r.name)}`);
    for (const r of rows<{ uid: number; image_id: string; name: string }>('SELECT n.uid, n.image_id, n.name FROM names n WHERE NOT EXISTS (SELECT 1 FROM owners o WHERE o.uid = n.uid AND o.image_id = n.image_id)')) bad.push(`name ${JSON.stringify(r.name)} of ${r.uid} for ${r.image_id}, which it does not own`);
    const fk = this.db.pragma('foreign_key_check') as unknown[];
    if (fk.length > 0) bad.push(`${fk.length} foreign key violation(s)`);
    return bad;
  }

  /** Recomputes every owner's missing count from the proofs (after an import). */
  recount(): void {
    this.q.recount.run();
  }

  /** Imports one image of the state format before the database (inside the creating transaction). */
  importImage(image: NewImage & { owners: Record<string, string> }, presentObjects: Set<string>, proofs: Map<number, Set<string>>): void {
    const uids = Object.keys(image.owners).map(Number);
    if (uids.length === 0) return;
    this.q.insertImage.run(image.id, image.entries, image.bytes, image.imageBytes, Object.keys(image.objects).length);
    // No owner yet: putRows counts nothing missing; each owner's row counts its own below.
    this.putRows(image.id, Object.entries(image.objects));
    for (const d of Object.keys(image.objects)) if (presentObjects.has(d)) this.q.setPresent.run(d);
    this.q.markStored.run(image.id);
    for (const uid of uids) {
      for (const d of Object.keys(image.objects)) if (presentObjects.has(d) && proofs.get(uid)?.has(d)) this.q.insertProof.run(uid, d);
      this.q.insertOwner.run(uid, image.id, image.owners[String(uid)]!, image.id, uid);
      if (image.name) this.q.setName.run(uid, image.name, image.id);
    }
  }
}
