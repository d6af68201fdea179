#!/usr/bin/env bash
# Runs the test suite (README: `bash scripts/test.sh` installs, then calls this): builds, runs every test file under
# tap as root in a private PID and mount namespace (scripts/private-ns.sh: nothing the run starts, mounts or
# creates outlives it), and ends with "N passed, N failed".
# Extra arguments go to tap (e.g. a test file); the files named among them, or else every test/**/*.test.ts, are the
# files the summary expects a result from.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

source scripts/private-ns.sh

# MOUNTGATE_SKIP_BUILD=1 reuses dist/ (for iterating on one test file).
if [ -z "${MOUNTGATE_SKIP_BUILD:-}" ]; then
  npm run -s build || { echo "0 passed, 1 failed"; exit 1; }
fi

expected=()
for arg in "$@"; do
  if [ -d "$arg" ]; then
    while IFS= read -r f; do expected+=("$f"); done < <(find "$arg" -name '*.test.ts' | sort)
  elif [[ $arg == *.test.ts ]]; then
    expected+=("$arg")
  fi
done
if [ ${#expected[@]} -eq 0 ]; then
  while IFS= read -r f; do expected+=("$f"); done < <(find test -name '*.test.ts' | sort)
fi

log=$(mktemp /tmp/mountgate-tap.XXXXXX)

# Only tap's TAP stream goes into the log the summary reads: what test
# processes and their daemons write to stderr (a dbus-daemon warning, say)
# is shown, but can never split a TAP line.
npx tap --reporter=tap "$@" | tee "$log"
rc=${PIPESTATUS[0]}
node test/summary.mjs "$log" "${expected[@]}" || rc=1
rm -f "$log"
# The .deb the run built once for its packaging tests (test/helpers/deb.ts).
rm -rf "/tmp/mountgate-deb-${MOUNTGATE_TEST_RUN//[^0-9a-zA-Z]/-}"
# The debootstrap tree and its tarballs the import tests share (test/helpers/rootfs.ts).
rm -rf --one-file-system "/tmp/mountgate-rootfs-${MOUNTGATE_TEST_RUN//[^0-9a-zA-Z]/-}"
exit "$rc"
