// Filesystem magic numbers (linux/magic.h) the broker needs to name, and the
// kernel-internal filesystems that are never a bind source.

export const fsMagicNames: ReadonlyMap<number, string> = new Map([
  [0x9fa0, 'proc'],
  [0x62656572, 'sysfs'],
  [0x1cd1, 'devpts'],
  [0x01021994, 'tmpfs'],
  [0xef53, 'ext4'],
  [0x58465342, 'xfs'],
  [0x9123683e, 'btrfs'],
  [0x794c7630, 'overlay'],
  [0xe0f5e1e2, 'erofs'],
  [0x65735546, 'fuse'],
  [0x63677270, 'cgroup2'],
  [0x27e0eb, 'cgroup'],
  [0x64626720, 'debugfs'],
  [0x74726163, 'tracefs'],
  [0x73636673, 'securityfs'],
  [0xcafe4a11, 'bpf'],
  [0x6165676c, 'pstore'],
  [0x62656570, 'configfs'],
  [0xde5e81e4, 'efivarfs'],
  [0x6e736673, 'nsfs'],
  [0x42494e4d, 'binfmt_misc'],
  [0x65735543, 'fusectl'],
  [0x19800202, 'mqueue'],
  [0x50495045, 'pipefs'],
  [0x534f434b, 'sockfs'],
  [0xf97cff8c, 'selinuxfs'],
  [0x67596969, 'rpc_pipefs'],
  [0x09041934, 'anon_inode'],
  [0x5346414f, 'afs'],
  [0x6969, 'nfs'],
  [0xff534d42, 'cifs'],
  [0x4d44, 'vfat'],
  [0x2011bab0, 'exfat'],
  [0x5346544e, 'ntfs'],
  [0x3153464a, 'jfs'],
  [0x52654973, 'reiserfs'],
  [0xf2f52010, 'f2fs'],
  [0x2fc12fc1, 'zfs'],
  [0x01161970, 'gfs2'],
  [0x7461636f, 'ocfs2'],
  [0x73717368, 'squashfs'],
  [0x9660, 'iso9660'],
]);

const kernelFilesystems = new Set([
  'proc', 'sysfs', 'devpts', 'cgroup', 'cgroup2', 'debugfs', 'tracefs', 'securityfs', 'bpf', 'pstore',
  'configfs', 'efivarfs', 'nsfs', 'binfmt_misc', 'fusectl', 'mqueue', 'pipefs', 'sockfs', 'selinuxfs',
  'rpc_pipefs', 'anon_inode',
]);

export function fsTypeName(magic: number): string {
  return fsMagicNames.get(magic) ?? `0x${magic.toString(16)}`;
}

export function isKernelFilesystem(magic: number): boolean {
  return kernelFilesystems.has(fsTypeName(magic));
}
