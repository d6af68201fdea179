# Sourced by test/run.sh, scripts/demo.sh and bench/run.sh, as root.
# Re-executes the calling script in a new PID namespace (with its own /proc)
# and a private mount namespace, so nothing the run starts or mounts can
# outlive it: when the script ends, or the run is interrupted or killed, the
# kernel kills every process left in the namespace (brokers, buses, user
# processes) and the mounts go with it. The calling script continues only
# inside the namespaces;
# outside, this file waits for it and then removes the test users the run
# created (test/helpers/users.ts marks each with the run's id), also when a
# test file or the whole run was killed.
# Inside, it binds the tree at a world-traversable path for the unprivileged
# users it runs programs as (a clone may sit below a 0700 directory) and
# exports MOUNTGATE_TEST_PKG, that path, and MOUNTGATE_TEST_RUN, the run's id.
if [ "$(id -u)" != 0 ]; then
  echo "mountgate: $0 needs root: it creates users, starts a private bus and a broker, and mounts. Run it in a root shell, or as: sudo bash $0" >&2
  exit 2
fi

# Removes the users of run "$1" (its runner pid and a random id), or with no
# argument the users of every run whose runner is gone (killed with SIGKILL
# before it could sweep). A user is touched only if users.ts marked it as a
# run's user (GECOS "mountgate test run PID ID") and its name is a test name;
# userdel also removes its subordinate ids (under shadow's lock) and refuses a
# user that still has processes.
mountgate_sweep_users() {
  local name gecos runner
  while IFS=: read -r name _ _ _ gecos _; do
    [[ $name =~ ^mg[a-z0-9]{0,5}-[0-9a-f]{6}$ ]] || continue
    [[ $gecos =~ ^mountgate\ test\ run\ ([0-9]+)\ [0-9a-f]+$ ]] || continue
    runner=${BASH_REMATCH[1]}
    if [ -n "${1:-}" ]; then
      [ "${gecos#mountgate test run }" = "$1" ] || continue
    else
      [ -e "/proc/$runner" ] && continue
    fi
    userdel "$name" || echo "mountgate: could not remove test user $name" >&2
  done < <(getent passwd)
}

if [ -z "${MOUNTGATE_PRIVATE_NS:-}" ]; then
  mountgate_sweep_users
  mountgate_run="$$ $(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
  MOUNTGATE_TEST_PKG=$(mktemp -d /tmp/mountgate-pkg.XXXXXX)
  chmod 755 "$MOUNTGATE_TEST_PKG"
  # --pdeathsig: unshare dies with this shell, even by SIGKILL; --kill-child:
  # then the namespace's first process gets SIGKILL, and with it every
  # process in the namespace.
  setpriv --pdeathsig KILL unshare --pid --fork --kill-child --mount-proc --propagation private \
    env MOUNTGATE_PRIVATE_NS=1 MOUNTGATE_TEST_RUN="$mountgate_run" MOUNTGATE_TEST_PKG="$MOUNTGATE_TEST_PKG" bash "$0" "$@" <&0 &
  mountgate_ns=$!
  mountgate_finish() {
    mountgate_sweep_users "$mountgate_run"
    rmdir "$MOUNTGATE_TEST_PKG" 2>/dev/null || true
    exit "$1"
  }
  # unshare blocks SIGINT and SIGTERM while it waits: an interrupted run ends
  # the namespace with SIGKILL (nothing in it survives), then sweeps.
  trap 'kill -KILL "$mountgate_ns" 2>/dev/null; wait "$mountgate_ns" || true; mountgate_finish 130' INT
  trap 'kill -KILL "$mountgate_ns" 2>/dev/null; wait "$mountgate_ns" || true; mountgate_finish 143' TERM HUP
  mountgate_rc=0
  wait "$mountgate_ns" || mountgate_rc=$?
  mountgate_finish "$mountgate_rc"
fi
mount --bind "$(pwd)" "$MOUNTGATE_TEST_PKG"
export MOUNTGATE_TEST_PKG MOUNTGATE_TEST_RUN
