#!/usr/bin/env bash
# Runs a benchmark as root in a private mount namespace, with unprivileged
# users able to reach the tree:  sudo bash bench/run.sh rtt [args]
#                                 sudo bash bench/run.sh writer [args]
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: bench/run.sh NAME [args]}; shift
[ -n "${MOUNTGATE_PRIVATE_NS:-}" ] || npm run -s build
set -- "$name" "$@"
source scripts/private-ns.sh
name=$1; shift
env -u NODE_OPTIONS node --import tsx "bench/$name.ts" "$@"
