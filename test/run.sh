#!/usr/bin/env bash
# The test command of README.md (`npm test`): builds, runs every test file under
# tap as root in a private mount namespace, and ends with "N passed, N failed".
# Extra arguments go to tap (e.g. a test file).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ "$(id -u)" != 0 ]; then
  echo "mountgate tests need root: they create users, start a private bus and a broker, and mount." >&2
  exit 2
fi

# Re-enter in a private mount namespace: whatever a test mounts dies with it.
if [ -z "${MOUNTGATE_TEST_NS:-}" ]; then
  exec unshare --mount --propagation private env MOUNTGATE_TEST_NS=1 bash "$0" "$@"
fi

# MOUNTGATE_SKIP_BUILD=1 reuses dist/ (for iterating on one test file).
if [ -z "${MOUNTGATE_SKIP_BUILD:-}" ]; then
  npm run -s build || { echo "0 passed, 1 failed"; exit 1; }
fi

# Unprivileged test users must be able to run the client from this tree, but
# the clone may sit below a directory only root can enter (mktemp -d is 0700).
# Bind the tree at a world-traversable path, visible in this namespace only.
pkg=$(mktemp -d /tmp/mountgate-pkg.XXXXXX)
chmod 755 "$pkg"
mount --bind "$root" "$pkg"
export MOUNTGATE_TEST_PKG="$pkg"
cleanup() { umount "$pkg" 2>/dev/null; rmdir "$pkg" 2>/dev/null; }
trap cleanup EXIT

log=$(mktemp /tmp/mountgate-tap.XXXXXX)

npx tap --reporter=tap "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
node test/summary.mjs "$log" || rc=1
rm -f "$log"
exit "$rc"
