#!/usr/bin/env bash
# README's demo command: installs what it needs, builds, then shows an
# unprivileged user getting an idmapped bind mount from the broker, on a
# private bus with the production bus policy. Leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${MOUNTGATE_PRIVATE_NS:-}" ]; then
  bash scripts/install-deps.sh
  npm run -s build
fi
source scripts/private-ns.sh
exec env -u NODE_OPTIONS node --import tsx demo/demo.ts
