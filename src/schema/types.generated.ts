// Generated from schemas/*.schema.json by scripts/gen-types.mjs: do not edit.
/* eslint-disable */

// bind-request.schema.json
/**
 * An id mapping as explicit ranges. Each range maps `count` ids starting at `from` (the id as stored on disk, or in the image) to ids starting at `to` (the id on the host). Ids outside every range stay unmapped and appear as the overflow id with no rights. At least one and at most 340 ranges, the kernel's limit for one user namespace.
 *
 * @minItems 1
 * @maxItems 340
 */
export type IdMap = IdRange[];

/**
 * The request of BindIdmapped: how to idmap a directory the caller owns. uidMap and gidMap map on-disk ids to host ids; omitted, a map is the identity over the ids the caller controls. An empty object asks for the identity map over every id the caller controls (its own uid/gid and its /etc/subuid and /etc/subgid ranges). Every range must have both its on-disk ids and its host ids among the ids the caller controls.
 */
export interface BindRequest {
  uidMap?: IdMap;
  gidMap?: IdMap;
  /**
   * Make the mount read-only. Note: the caller can clear this flag after attaching the mount; the file permissions on disk are what protects the files.
   */
  readOnly?: boolean;
  /**
   * Forbid executing files from the mount (same caveat as readOnly).
   */
  noexec?: boolean;
}
export interface IdRange {
  /**
   * First id on disk (or in the image).
   */
  from: number;
  /**
   * First host id it maps to.
   */
  to: number;
  /**
   * How many consecutive ids the range covers.
   */
  count: number;
}

// idmap.schema.json
/**
 * An id mapping as explicit ranges. Each range maps `count` ids starting at `from` (the id as stored on disk, or in the image) to ids starting at `to` (the id on the host). Ids outside every range stay unmapped and appear as the overflow id with no rights. At least one and at most 340 ranges, the kernel's limit for one user namespace.
 *
 * @minItems 1
 * @maxItems 340
 */

// manifest.schema.json
/**
 * One file; "type" says which kind and which fields apply.
 */
export type Entry =
  | DirEntry
  | FileEntry
  | SymlinkEntry
  | HardlinkEntry
  | ChardevEntry
  | BlockdevEntry
  | FifoEntry
  | SocketEntry
  | WhiteoutEntry;
/**
 * Absolute path in the image: "/" or "/" followed by names joined by single "/"; no empty, "." or ".." name, no trailing "/", no NUL. Text or bytes: a JSON string (its UTF-8 bytes) or {"base64": ...} (see bytes); the rules apply to the bytes.
 */
export type Path = string | Bytes;
/**
 * Bytes in base64 (RFC 4648 section 4, with padding).
 */
export type Base64 = string;
/**
 * Extended attributes, in any order (the image sorts them); keys are unique within an entry.
 *
 * @maxItems 4094
 */
export type Xattrs = {
  /**
   * Full name with its namespace, e.g. "user.foo" or "security.selinux". Text or bytes: a JSON string (its UTF-8 bytes) or {"base64": ...}.
   */
  key: string | Bytes;
  value: Base64;
}[];

/**
 * An image manifest: one filesystem tree, described completely. It is the JSON twin of the composefs dump format (composefs-dump(5)): `mountgate manifest from-dump` and `to-dump` convert losslessly, and the broker builds from it the same EROFS image mkcomposefs builds from the dump. Entries are sorted by path, component by component (a directory comes right before its contents, and siblings in byte order of their names, as bytes: for characters above U+FFFF that is not the UTF-16 order of JavaScript strings), start with the root directory "/", and every parent appears as a directory. Paths, hardlink and symlink targets, backing paths and xattr keys become bytes in the image: a JSON string stands for its UTF-8 bytes (a string holding a lone UTF-16 surrogate has none and is refused), and any byte string, UTF-8 or not, can be written as {"base64": "..."} (see $defs/bytes), so names that are not UTF-8 survive dump -> manifest -> dump. Ordering and uniqueness are decided on those bytes. xattr values and inline contents are bytes, written in base64 (RFC 4648, with padding). Limits beyond this schema (checked by mountgate, with a message naming the entry): names at most 255 bytes, paths at most 4095 bytes and 1024 components, symlink targets 1..4095 bytes, xattr keys 1..255 bytes, xattr values at most 65535 bytes, and all xattrs of one entry at most 32767 bytes counted as composefs does (12 + the sum of 7 + key + value bytes).
 */
export interface Manifest {
  /**
   * Manifest format version: 1.
   */
  version: 1;
  /**
   * A human name for the image (not stored in it).
   */
  name?: string;
  /**
   * Registers the image hidden, kept for another image of the caller's (this id): it is not listed, counts toward the caller's limits like any image, and goes when that image is removed. mountgate uses it for the contents a layer of an imported image needs but the flattened image lacks (what `image export-layer` reads). Not stored in the image, and not part of its id.
   */
  keptFor?: string;
  /**
   * Every file of the tree, sorted by path; the first is the root directory "/".
   *
   * @minItems 1
   * @maxItems 10000000
   */
  entries: Entry[];
}
/**
 * A directory.
 */
export interface DirEntry {
  path: Path;
  /**
   * Permission bits (st_mode & 07777: setuid, setgid, sticky, rwx), as a number: 493 is 0755. The file type comes from "type".
   */
  mode: number;
  /**
   * Owner user id, as stored in the image (before any idmap).
   */
  uid: number;
  /**
   * Owner group id, as stored in the image (before any idmap).
   */
  gid: number;
  mtime: Mtime;
  /**
   * Link count shown by stat. Optional: for a directory the default is 2 + its subdirectories (and the image always stores that), otherwise 1 + the hardlink entries that point here. Given only to keep a composefs dump lossless.
   */
  nlink?: number;
  xattrs?: Xattrs;
  type: "dir";
  /**
   * The SIZE field of the composefs dump, kept so dumps round-trip; the image ignores it for this type. Default 0.
   */
  size?: number;
}
/**
 * A byte string given as its bytes, for a value that is not UTF-8 (a file name in Latin-1, say): {"base64": "//4="} is the two bytes 0xff 0xfe. Allowed wherever the manifest says "text or bytes" (paths, targets, backing paths, xattr keys); the same rules apply to the bytes as to the UTF-8 bytes of a string, and the two spellings of the same bytes are the same name. Why an object: a plain JSON string keeps meaning exactly what it meant (its UTF-8 bytes), no escape syntax is added inside strings, and base64 is the spelling the manifest already uses for bytes. mountgate writes this form only for bytes that are not valid UTF-8.
 */
export interface Bytes {
  base64: Base64;
}
/**
 * Modification time as seconds and nanoseconds since the epoch (two integers, because nanoseconds since the epoch do not fit a JSON number exactly).
 */
export interface Mtime {
  /**
   * Seconds since the epoch.
   */
  sec: number;
  /**
   * Nanoseconds within the second.
   */
  nsec: number;
}
/**
 * A regular file. Its data lives outside the image (the image stores its fs-verity digest and the path of the backing object) unless it is small enough to be inline.
 */
export interface FileEntry {
  path: Path;
  /**
   * Permission bits (st_mode & 07777: setuid, setgid, sticky, rwx), as a number: 493 is 0755. The file type comes from "type".
   */
  mode: number;
  /**
   * Owner user id, as stored in the image (before any idmap).
   */
  uid: number;
  /**
   * Owner group id, as stored in the image (before any idmap).
   */
  gid: number;
  mtime: Mtime;
  /**
   * Link count shown by stat. Optional: for a directory the default is 2 + its subdirectories (and the image always stores that), otherwise 1 + the hardlink entries that point here. Given only to keep a composefs dump lossless.
   */
  nlink?: number;
  xattrs?: Xattrs;
  type: "file";
  /**
   * File size in bytes (at most 2^53: 1024 chunks of 2^43 bytes).
   */
  size: number;
  /**
   * fs-verity sha256 digest of the content, 64 lowercase hex characters. Written to the image (overlay metacopy) for a non-inline file of non-zero size; overlayfs with verity=require checks the backing object against it.
   */
  digest?: string;
  /**
   * Bytes in base64 (RFC 4648 section 4, with padding).
   */
  inline?: string;
  /**
   * Path of the backing object in the object store, relative to it (e.g. "35/d02f81...": the dump PAYLOAD field). Written as the overlay redirect of a non-inline file of non-zero size; without it, the file is looked up under its own path. Text or bytes: a JSON string (its UTF-8 bytes) or {"base64": ...}.
   */
  backing?: string | Bytes;
}
/**
 * A symbolic link.
 */
export interface SymlinkEntry {
  path: Path;
  /**
   * Permission bits (st_mode & 07777: setuid, setgid, sticky, rwx), as a number: 493 is 0755. The file type comes from "type".
   */
  mode: number;
  /**
   * Owner user id, as stored in the image (before any idmap).
   */
  uid: number;
  /**
   * Owner group id, as stored in the image (before any idmap).
   */
  gid: number;
  mtime: Mtime;
  /**
   * Link count shown by stat. Optional: for a directory the default is 2 + its subdirectories (and the image always stores that), otherwise 1 + the hardlink entries that point here. Given only to keep a composefs dump lossless.
   */
  nlink?: number;
  xattrs?: Xattrs;
  type: "symlink";
  /**
   * The link target, 1..4095 bytes. Text or bytes: a JSON string (its UTF-8 bytes) or {"base64": ...}.
   */
  target: string | Bytes;
}
/**
 * Another name for an existing entry. It has no attributes of its own: stat shows those of the target.
 */
export interface HardlinkEntry {
  path: Path;
  type: "hardlink";
  /**
   * Absolute path in the image: "/" or "/" followed by names joined by single "/"; no empty, "." or ".." name, no trailing "/", no NUL. Text or bytes: a JSON string (its UTF-8 bytes) or {"base64": ...} (see bytes); the rules apply to the bytes.
   */
  target: string | Bytes;
}
/**
 * A character device. The format keeps it; the mount policy refuses images that have one.
 */
export interface ChardevEntry {
  path: Path;
  /**
   * Permission bits (st_mode & 07777: setuid, setgid, sticky, rwx), as a number: 493 is 0755. The file type comes from "type".
   */
  mode: number;
  /**
   * Owner user id, as stored in the image (before any idmap).
   */
  uid: number;
  /**
   * Owner group id, as stored in the image (before any idmap).
   */
  gid: number;
  mtime: Mtime;
  /**
   * Link count shown by stat. Optional: for a directory the default is 2 + its subdirectories (and the image always stores that), otherwise 1 + the hardlink entries that point here. Given only to keep a composefs dump lossless.
   */
  nlink?: number;
  xattrs?: Xattrs;
  type: "chardev";
  /**
   * Device number as the kernel encodes it (new_encode_dev), not 0: a 0:0 character device is a whiteout.
   */
  rdev: number;
  /**
   * The SIZE field of the composefs dump, kept so dumps round-trip; the image ignores it for this type. Default 0.
   */
  size?: number;
}
/**
 * A block device. The format keeps it; the mount policy refuses images that have one.
 */
export interface BlockdevEntry {
  path: Path;
  /**
   * Permission bits (st_mode & 07777: setuid, setgid, sticky, rwx), as a number: 493 is 0755. The file type comes from "type".
   */
  mode: number;
  /**
   * Owner user id, as stored in the image (before any idmap).
   */
  uid: number;
  /**
   * Owner group id, as stored in the image (before any idmap).
   */
  gid: number;
  mtime: Mtime;
  /**
   * Link count shown by stat. Optional: for a directory the default is 2 + its subdirectories (and the image always stores that), otherwise 1 + the hardlink entries that point here. Given only to keep a composefs dump lossless.
   */
  nlink?: number;
  xattrs?: Xattrs;
  type: "blockdev";
  /**
   * Device number as the kernel encodes it (new_encode_dev).
   */
  rdev: number;
  /**
   * The SIZE field of the composefs dump, kept so dumps round-trip; the image ignores it for this type. Default 0.
   */
  size?: number;
}
/**
 * A named pipe.
 */
export interface FifoEntry {
  path: Path;
  /**
   * Permission bits (st_mode & 07777: setuid, setgid, sticky, rwx), as a number: 493 is 0755. The file type comes from "type".
   */
  mode: number;
  /**
   * Owner user id, as stored in the image (before any idmap).
   */
  uid: number;
  /**
   * Owner group id, as stored in the image (before any idmap).
   */
  gid: number;
  mtime: Mtime;
  /**
   * Link count shown by stat. Optional: for a directory the default is 2 + its subdirectories (and the image always stores that), otherwise 1 + the hardlink entries that point here. Given only to keep a composefs dump lossless.
   */
  nlink?: number;
  xattrs?: Xattrs;
  type: "fifo";
  /**
   * The SIZE field of the composefs dump, kept so dumps round-trip; the image ignores it for this type. Default 0.
   */
  size?: number;
}
/**
 * A unix socket node.
 */
export interface SocketEntry {
  path: Path;
  /**
   * Permission bits (st_mode & 07777: setuid, setgid, sticky, rwx), as a number: 493 is 0755. The file type comes from "type".
   */
  mode: number;
  /**
   * Owner user id, as stored in the image (before any idmap).
   */
  uid: number;
  /**
   * Owner group id, as stored in the image (before any idmap).
   */
  gid: number;
  mtime: Mtime;
  /**
   * Link count shown by stat. Optional: for a directory the default is 2 + its subdirectories (and the image always stores that), otherwise 1 + the hardlink entries that point here. Given only to keep a composefs dump lossless.
   */
  nlink?: number;
  xattrs?: Xattrs;
  type: "socket";
  /**
   * The SIZE field of the composefs dump, kept so dumps round-trip; the image ignores it for this type. Default 0.
   */
  size?: number;
}
/**
 * An overlay whiteout (a 0:0 character device): hides the same name in lower layers. In the image it becomes an escaped whiteout, as mkcomposefs writes it.
 */
export interface WhiteoutEntry {
  path: Path;
  /**
   * Permission bits (st_mode & 07777: setuid, setgid, sticky, rwx), as a number: 493 is 0755. The file type comes from "type".
   */
  mode: number;
  /**
   * Owner user id, as stored in the image (before any idmap).
   */
  uid: number;
  /**
   * Owner group id, as stored in the image (before any idmap).
   */
  gid: number;
  mtime: Mtime;
  /**
   * Link count shown by stat. Optional: for a directory the default is 2 + its subdirectories (and the image always stores that), otherwise 1 + the hardlink entries that point here. Given only to keep a composefs dump lossless.
   */
  nlink?: number;
  xattrs?: Xattrs;
  type: "whiteout";
  /**
   * The SIZE field of the composefs dump, kept so dumps round-trip; the image ignores it for this type. Default 0.
   */
  size?: number;
}

// mount-request.schema.json
/**
 * An id mapping as explicit ranges. Each range maps `count` ids starting at `from` (the id as stored on disk, or in the image) to ids starting at `to` (the id on the host). Ids outside every range stay unmapped and appear as the overflow id with no rights. At least one and at most 340 ranges, the kernel's limit for one user namespace.
 *
 * @minItems 1
 * @maxItems 340
 */

export interface MountRequest {
  uidMap?: IdMap;
  gidMap?: IdMap;
  /**
   * Forbid executing files from the mount.
   */
  noexec?: boolean;
}

// policy.schema.json
/**
 * The broker's policy file (/etc/mountgate/policy.json). Anything not allowed here is denied; GetInfo is always allowed. Read at start and on SIGHUP; a file that does not validate is refused and the last good policy stays in force.
 */
export interface Policy {
  /**
   * Format version of this file.
   */
  version: 1;
  /**
   * Who may call each privileged method. A method that is not listed is denied to everyone.
   */
  methods?: {
    BindIdmapped?: MethodRule;
    Explain?: MethodRule;
    AddImage?: MethodRule;
    PutObjects?: MethodRule;
    ProveObjects?: MethodRule;
    MountImage?: MethodRule;
    ListImages?: MethodRule;
    RemoveImage?: MethodRule;
  };
  /**
   * Per-user limits, counted per calling uid.
   */
  limits?: {
    /**
     * Requests of one user being worked on at the same time.
     */
    concurrentRequests?: number;
    /**
     * Requests of one user accepted in any 60 seconds.
     */
    requestsPerMinute?: number;
  };
  /**
   * Absolute paths under which no directory may be bind-mounted, whoever owns it. /proc, /sys and /dev are always denied by filesystem type as well.
   *
   * @maxItems 256
   */
  deniedSources?: string[];
  /**
   * Composefs images: where the store lives and what each user may keep in it.
   */
  images?: {
    /**
     * The broker-owned store directory (default: <state dir>/store). Read at start only.
     */
    store?: string;
    /**
     * Images one user may have registered (default 64).
     */
    maxImagesPerUser?: number;
    /**
     * Bytes one user may have registered: the file sizes of the user's images plus each image's own metadata (its EROFS file) (default 10 GiB).
     */
    maxBytesPerUser?: number;
    /**
     * Largest manifest AddImage reads, in bytes; a bigger one is refused by its size before any byte is read (default 256 MiB).
     */
    maxManifestBytes?: number;
    /**
     * Entries one image may have (default 2000000).
     */
    maxEntriesPerImage?: number;
    /**
     * Image ids whose objects every user may reference without uploading them (base images the administrator vouches for).
     *
     * @maxItems 4096
     */
    shared?: string[];
  };
}
export interface MethodRule {
  /**
   * User names allowed, or "*" for every local user.
   *
   * @maxItems 4096
   */
  users?: string[];
  /**
   * Groups whose members are allowed (primary or supplementary, from /etc/group).
   *
   * @maxItems 4096
   */
  groups?: string[];
  /**
   * Allow only callers that have both a /etc/subuid and a /etc/subgid range (default true).
   */
  requireSubordinateIds?: boolean;
}

// remove-request.schema.json
/**
 * The request of RemoveImage: exactly one of imageId (the caller's registration of the image goes, with every name the caller gives it) or name (only that name goes, unless it is the image's last name of the caller's: then the registration goes too).
 */
export interface RemoveRequest {
  /**
   * The image's id (64 hex).
   */
  imageId?: string;
  /**
   * One of the caller's names for an image (as its manifest gave it).
   */
  name?: string;
}
