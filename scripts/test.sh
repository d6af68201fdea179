#!/usr/bin/env bash
# README's test command: installs what the tests need, then runs them all.
# Needs root: the tests create users, start a private bus and a broker, mount.
# Ends with the line "N passed, N failed". Extra arguments go to tap.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
exec bash test/run.sh "$@"
