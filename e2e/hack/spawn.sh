#!/usr/bin/env bash
# spawn.sh <name> <command> [args...]
# Run a long-lived process (operator, simulator, ...) detached, in its own process
# group, registered with the cluster in $LLMD_CLUSTER_DIR: pid in pids/<name>.pid,
# output in logs/<name>.log. cluster-down.sh stops it. Prints the pid.
#
# Processes started some other way can register themselves the same way: write the
# pid to $LLMD_CLUSTER_DIR/pids/<name>.pid after the process started (cluster-down
# ignores pid files older than the process they name, to survive pid reuse).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
(($# >= 2)) || { echo "usage: $0 <name> <command> [args...]" >&2; exit 2; }
name="$1"; shift
[[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || die "bad name: $name"
[[ -d "$LLMD_CLUSTER_DIR/pids" ]] || die "no cluster in $LLMD_CLUSTER_DIR (run cluster-up.sh)"
STATE="$(llmd_state_dir)"
if pid_alive "$STATE/pids/$name.pid"; then die "$name already running (pid $(cat "$STATE/pids/$name.pid"))"; fi
setsid "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
echo $! >"$STATE/pids/$name.pid"
echo $!
