#!/usr/bin/env bash
# Runs benchmarks as root in a private PID and mount namespace (scripts/private-ns.sh:
# nothing a bench starts, mounts or creates outlives it), with unprivileged users able
# to reach the tree.
#   sudo bash bench/run.sh NAME [args]   one bench, bench/NAME.ts
#   sudo bash bench/run.sh               the suite (npm run bench): every bench/*.ts that
#                                        writes bench/results/NAME.json (it imports
#                                        ./lib/results.js), each with its defaults, then
#                                        bench/report.ts: BENCHMARKS.md and bench/plots/.
# The long runs (fuzz.ts, crash.ts) write no results and are not part of the suite.
# MOUNTGATE_BENCH_ONLY="rtt startup" runs only those benches of the suite (the report
# still covers every results file).
# The reference tools are found on PATH or under $MOUNTGATE_REF_COMPOSEFS.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${MOUNTGATE_PRIVATE_NS:-}" ] || npm run -s build
source scripts/private-ns.sh
# Inside the private namespaces. The broker's store and every bench's scratch go on
# a journaled ext4 (mkfs.ext4's defaults, as Debian's installer makes /var), on a
# loop device: this VM's root ext4 has no journal, and there every new file scans
# the inodes freed in the last minutes by anyone (435 us a create after 5,000
# deletions nearby, against 56 us with a journal: bench/notes/upload.md), which
# measures the allocator, not mountgate. The image file is unlinked once mounted;
# it and the loop device go with the namespace (the mount point stays, empty). MOUNTGATE_BENCH_STORE_FS=root keeps
# everything on the root filesystem.
if [ "${MOUNTGATE_BENCH_STORE_FS:-loop}" != root ]; then
  mkdir -p /var/tmp/mountgate-bench
  store_img=$(mktemp /var/tmp/mountgate-bench/store-fs.XXXXXX)
  truncate -s 96G "$store_img"
  mkfs.ext4 -q -F "$store_img"
  store_mnt=/var/tmp/mountgate-bench/store-fs   # mounted in this run's namespace only
  mkdir -p "$store_mnt"
  mount -o loop "$store_img" "$store_mnt"
  rm -f "$store_img"
  chmod 1777 "$store_mnt"
  export TMPDIR=$store_mnt MOUNTGATE_BENCH_STORE_FS="journaled ext4 (loop)"
else
  export MOUNTGATE_BENCH_STORE_FS="the root filesystem ($(findmnt -no FSTYPE /))"
fi
bench() { env -u NODE_OPTIONS node --import tsx "$@"; }
if [ $# -gt 0 ]; then
  name=$1; shift
  bench "bench/$name.ts" "$@"
  exit
fi
failed=()
for file in $(grep -l "from './lib/results.js'" bench/*.ts | sort); do
  name=$(basename "$file" .ts)
  [ "$name" = report ] && continue
  if [ -n "${MOUNTGATE_BENCH_ONLY:-}" ] && [[ " $MOUNTGATE_BENCH_ONLY " != *" $name "* ]]; then continue; fi
  echo "=== bench $name ($(date -u +%H:%M:%S))"
  bench "$file" || failed+=("$name")
done
bench bench/report.ts
if [ ${#failed[@]} -gt 0 ]; then
  echo "bench: failed: ${failed[*]} (their results, if any, are from an earlier run)" >&2
  exit 1
fi
