#!/usr/bin/env bash
# Makes (once) the Debian bookworm root file system that
# test/systemd/installed.test.ts boots with systemd-nspawn, and prints its path.
#
#   scripts/nspawn-root.sh [CACHE_DIR]     (default: $MOUNTGATE_NSPAWN_CACHE or
#                                           /var/cache/mountgate-test)
#
# The root is `debootstrap --variant=minbase` plus what a booted system with
# the package needs: systemd and dbus (PID 1 and the system bus), uidmap,
# util-linux and passwd (the package's Depends and the test user's
# newuidmap), procps (ps in the test). Nothing of mountgate is in it: the test
# boots it with --volatile=overlay and installs the package on a tmpfs upper
# layer, so the cached tree stays exactly what this script made.
#
# The tree is cached under CACHE_DIR/bookworm-KEY, KEY being a hash of the
# recipe (suite, variant, packages and the steps' version below), and reused while its marker file says it was finished; a build
# goes to a temporary directory first and is renamed into place only when
# complete, under a lock, so an interrupted or concurrent build never leaves
# a half tree that looks valid. First build: a few minutes (network); later:
# instant. Needs root, debootstrap and Debian's mirror.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "nspawn-root.sh: needs root (debootstrap)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "nspawn-root.sh: debootstrap is required (scripts/install-deps.sh)" >&2; exit 2; }

cache=${1:-${MOUNTGATE_NSPAWN_CACHE:-/var/cache/mountgate-test}}
mirror=${MOUNTGATE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
include=systemd,dbus,uidmap,util-linux,passwd,procps
# Bump when the steps after debootstrap change: a new key means a new tree.
recipe_version=1
key=$(printf '%s\n' bookworm minbase "$include" "$recipe_version" | sha256sum | cut -c1-12)
root=$cache/bookworm-$key
marker=$root/.mountgate-nspawn-root

mkdir -p "$cache"
chmod 0755 "$cache"
exec 9>"$cache/.lock"
flock 9

if [ -f "$marker" ] && [ "$(cat "$marker")" = "$key" ] && [ -x "$root/lib/systemd/systemd" ]; then
  echo "$root"
  exit 0
fi

# Trees of older versions of this script and failed attempts.
for old in "$cache"/bookworm-* "$cache"/.build-*; do
  [ -e "$old" ] || continue
  [ "$old" = "$root" ] && [ -f "$marker" ] && continue
  rm -rf --one-file-system "$old"
done
rm -rf --one-file-system "$root"

build=$(mktemp -d "$cache/.build-XXXXXX")
# debootstrap mounts proc and sys in the target; in our own mount namespace
# they vanish with it, whatever happens.
unshare --mount --propagation private \
  debootstrap --variant=minbase --include="$include" bookworm "$build" "$mirror" >"$build.log" 2>&1 || {
    echo "nspawn-root.sh: debootstrap failed; last lines of its log:" >&2
    tail -n 20 "$build.log" >&2
    rm -rf --one-file-system "$build" "$build.log"
    exit 1
  }
rm -f "$build.log"

# No apt caches in the cached tree (the test installs local .debs with dpkg).
rm -rf "$build"/var/cache/apt/archives/*.deb "$build"/var/lib/apt/lists/*
# A fixed machine id: systemd would otherwise write one on every (volatile) boot.
systemd-machine-id-setup --root="$build" >/dev/null 2>&1 || true
# The container's console login is not used; the test enters with nsenter.
echo mountgate-test > "$build/etc/hostname"

echo "$key" > "$build/.mountgate-nspawn-root"
chmod 0755 "$build"
mv "$build" "$root"
echo "$root"
