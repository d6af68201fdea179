# Sourced by test/run.sh and scripts/demo.sh, as root. Re-executes the calling
# script in a private mount namespace (whatever it mounts dies with it), then
# binds the tree at a world-traversable path for the unprivileged users it
# runs programs as: a clone may sit below a 0700 directory (mktemp -d).
# Exports MOUNTGATE_TEST_PKG, the path those users see the tree at.
if [ "$(id -u)" != 0 ]; then
  echo "mountgate: $0 needs root: it creates users, starts a private bus and a broker, and mounts." >&2
  exit 2
fi
if [ -z "${MOUNTGATE_PRIVATE_NS:-}" ]; then
  exec unshare --mount --propagation private env MOUNTGATE_PRIVATE_NS=1 bash "$0" "$@"
fi
MOUNTGATE_TEST_PKG=$(mktemp -d /tmp/mountgate-pkg.XXXXXX)
chmod 755 "$MOUNTGATE_TEST_PKG"
mount --bind "$(pwd)" "$MOUNTGATE_TEST_PKG"
export MOUNTGATE_TEST_PKG
trap 'umount "$MOUNTGATE_TEST_PKG" 2>/dev/null; rmdir "$MOUNTGATE_TEST_PKG" 2>/dev/null' EXIT
