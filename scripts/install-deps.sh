#!/usr/bin/env bash
# Installs what mountgate's tests and demo need on a Debian 12 machine, as
# root: the Debian packages (apt-get, only those missing) and the npm
# packages (npm ci, when package-lock.json changed since the last install).
set -euo pipefail
cd "$(dirname "$0")/.."

# dbus-daemon/dbus-bin: the private bus and dbus-send; uidmap: newuidmap and
# newgidmap for user namespaces; util-linux: unshare, setpriv; passwd: useradd;
# procps: pkill; erofs-utils: fsck.erofs on the images we write; fsverity:
# reference fs-verity digests; systemd: systemd-analyze for the unit tests
# (systemd need not run); debootstrap and systemd-container (systemd-nspawn):
# test/systemd/installed.test.ts boots the installed package under a real
# systemd in a Debian root; g++/make/python3: native addons (usocket, node-pty);
# for test/adversarial: fuse3 (fusermount3), bindfs and squashfuse (FUSE
# filesystems a user serves), squashfs-tools (mksquashfs) and e2fsprogs
# (mkfs.ext4, debugfs) for filesystem images a user makes; attr (setfattr,
# getfattr), acl (setfacl, getfacl) and libcap2-bin (setcap, getcap) for
# xattrs and ACLs in images; for test/import: zstd (zstd layers), podman
# and skopeo (images saved as docker-archive, oci-archive and oci: layouts),
# debootstrap (the Debian root filesystem the import tests share,
# test/helpers/rootfs.sh); test/recipes: podman with both OCI runtimes, runc
# and crun (crun only where cgroup2 holds no controller: the test runs it
# from a mount namespace without /sys/fs/cgroup/unified), bubblewrap (bwrap),
# busybox-static (the one-binary root filesystem the recipes, the image and
# the toolbox tests run on) and tar (podman import).
packages=(podman runc crun skopeo zstd bubblewrap busybox-static tar attr acl libcap2-bin dbus-daemon dbus-bin uidmap util-linux passwd procps erofs-utils fsverity systemd debootstrap systemd-container g++ make python3 ca-certificates fuse3 bindfs squashfuse squashfs-tools e2fsprogs)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "mountgate: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The broker's front runs as this system user (mountgated --front-user), the
# one the production bus policy lets own org.mountgate.Broker1.
if ! id -u mountgate >/dev/null 2>&1; then
  echo "mountgate: creating the system user mountgate (the broker's front)"
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --user-group mountgate
fi

stamp=node_modules/.mountgate-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "mountgate: installing npm packages (npm ci)"
  npm ci --no-audit --no-fund
  echo "$want" > "$stamp"
fi
