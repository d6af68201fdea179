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
