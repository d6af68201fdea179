// Small hand-written manifests whose images the snapshot tests pin.
import type { Manifest } from '../../src/schema/types.generated.js';

const t0 = { sec: 1700000000, nsec: 0 };
const b64 = (s: string) => Buffer.from(s).toString('base64');

export const rootOnly: Manifest = {
  version: 1,
  entries: [{ path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: t0 }],
};

export const everyKind: Manifest = {
  version: 1,
  name: 'every-kind',
  entries: [
    { path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: t0, xattrs: [{ key: 'security.selinux', value: b64('system_u:object_r:root_t:s0\0') }] },
    { path: '/bin', type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime: t0, target: 'usr/bin' },
    { path: '/etc', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: { sec: 1700000001, nsec: 5 } },
    { path: '/etc/hostname', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: t0, size: 9, inline: b64('mountgate') },
    { path: '/etc/passwd', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: t0, size: 4100, digest: 'a'.repeat(64), backing: 'aa/' + 'a'.repeat(62), xattrs: [{ key: 'user.note', value: b64('x=1') }] },
    { path: '/etc/passwd-', type: 'hardlink', target: '/etc/passwd' },
    { path: '/run', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: t0 },
    { path: '/run/fifo', type: 'fifo', mode: 0o600, uid: 1000, gid: 1000, mtime: t0 },
    { path: '/run/sock', type: 'socket', mode: 0o600, uid: 70000, gid: 70000, mtime: t0 },
    { path: '/usr', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: t0, xattrs: [{ key: 'trusted.overlay.opaque', value: b64('y') }] },
    { path: '/usr/bin', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: t0 },
    { path: '/usr/bin/true', type: 'file', mode: 0o755, uid: 0, gid: 0, mtime: t0, size: 0 },
    { path: '/usr/gone', type: 'whiteout', mode: 0o000, uid: 0, gid: 0, mtime: t0 },
  ],
};

/** A directory whose entries need several blocks. */
export const bigDirectory: Manifest = {
  version: 1,
  entries: [
    { path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: t0 },
    { path: '/d', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: t0 },
    ...Array.from({ length: 400 }, (_, i) => ({
      path: `/d/file-with-a-longish-name-${String(i).padStart(4, '0')}`,
      type: 'file' as const, mode: 0o644, uid: 0, gid: 0, mtime: t0, size: i * 1000, digest: i.toString(16).padStart(64, '0'),
    })),
  ],
};
