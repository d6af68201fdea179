#!/usr/bin/env bash
# Builds the Debian root filesystem the import tests share (test/helpers/rootfs.ts
# calls it once per run, under a lock) and the layer tarballs made of it:
#
#   rootfs.sh DIR      DIR/tree, DIR/gnu.tar, DIR/posix.tar, DIR/ustar.tar,
#                      DIR/posix.tar.gz, DIR/posix.tar.zst
#
# The tree is `debootstrap --variant=minbase bookworm` from Debian's mirror
# ($MOUNTGATE_DEBIAN_MIRROR, default http://deb.debian.org/debian), made the
# way container base images are: no device nodes in /dev, no apt caches. Then
# what a minbase tree lacks and layers carry: user.* xattrs (text and binary,
# on a file, a hardlinked file and a directory), a file capability
# (setcap on a copy of a program), a directory and files owned by a user and
# a group other than root, with times that have nanoseconds.
# Needs root, debootstrap, tar, gzip, zstd, setfattr and setcap.
set -euo pipefail

out=$1
mirror=${MOUNTGATE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
tree=$out/tree
rm -rf --one-file-system "$tree"
# debootstrap mounts proc and sys in the target; in our own mount namespace
# they vanish with it, whatever happens.
unshare --mount --propagation private debootstrap --variant=minbase bookworm "$tree" "$mirror" >"$out/debootstrap.log" 2>&1 || {
  echo "rootfs.sh: debootstrap failed; last lines of its log:" >&2
  tail -n 20 "$out/debootstrap.log" >&2
  exit 1
}

find "$tree/dev" -mindepth 1 \( -type c -o -type b \) -delete
rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/*

setfattr -n user.origin -v 'debootstrap minbase' "$tree/etc/debian_version"
setfattr -n user.binary -v 0x00ff0a00 "$tree/etc/debian_version"
setfattr -n user.dir -v 'a directory' "$tree/usr/share/doc"
# perl and perl5.36.0 are one file with two names.
setfattr -n user.linked -v 'on both names' "$tree/usr/bin/perl"
cp -p "$tree/usr/bin/true" "$tree/usr/local/bin/pinglike"
setcap cap_net_raw+ep "$tree/usr/local/bin/pinglike"

mkdir -p "$tree/home/user/.config"
printf 'a user file\n' >"$tree/home/user/notes"
printf 'a group file\n' >"$tree/home/user/.config/shared"
chmod 0750 "$tree/home/user"
chmod 0640 "$tree/home/user/.config/shared"
chown -R 1000:1000 "$tree/home/user"
chgrp 4321 "$tree/home/user/.config/shared"
touch -d '2024-02-29 12:34:56.123456789' "$tree/home/user/notes"

# Every format GNU tar writes a tree like this in: gnu (no xattrs), ustar
# (every name here fits in 100+155 bytes), posix/PAX with the xattrs and
# nanosecond times, and the PAX one compressed both ways.
tarc() { tar --sort=name --numeric-owner -C "$tree" "$@" .; }
tarc --format=gnu -cf "$out/gnu.tar"
tarc --format=ustar -cf "$out/ustar.tar"
tarc --format=posix --xattrs --xattrs-include='*' -cf "$out/posix.tar"
gzip -c "$out/posix.tar" >"$out/posix.tar.gz"
zstd -q -c "$out/posix.tar" >"$out/posix.tar.zst"
# Readable by the test users (the podman test imports a tarball as one).
chmod 0755 "$out"
chmod 0644 "$out"/*.tar "$out"/*.tar.gz "$out"/*.tar.zst
