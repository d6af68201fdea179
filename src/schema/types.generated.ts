// Generated from schemas/*.schema.json by scripts/gen-types.mjs: do not edit.
/* eslint-disable */

// bind-request.schema.json
/**
 * An id mapping as explicit ranges. Each range maps `count` ids starting at `from` (the id as stored on disk, or in the image) to ids starting at `to` (the id on the host). Ids outside every range stay unmapped and appear as the overflow id with no rights. At most 340 ranges, the kernel's limit for one user namespace.
 *
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
 * An id mapping as explicit ranges. Each range maps `count` ids starting at `from` (the id as stored on disk, or in the image) to ids starting at `to` (the id on the host). Ids outside every range stay unmapped and appear as the overflow id with no rights. At most 340 ranges, the kernel's limit for one user namespace.
 *
 * @maxItems 340
 */

// mount-request.schema.json
/**
 * An id mapping as explicit ranges. Each range maps `count` ids starting at `from` (the id as stored on disk, or in the image) to ids starting at `to` (the id on the host). Ids outside every range stay unmapped and appear as the overflow id with no rights. At most 340 ranges, the kernel's limit for one user namespace.
 *
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
