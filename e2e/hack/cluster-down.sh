#!/usr/bin/env bash
# Stop the cluster in $LLMD_CLUSTER_DIR and remove its state (etcd data, certs).
#
# Stops every process recorded as $LLMD_CLUSTER_DIR/pids/<name>.pid: first the
# ones registered by other scripts (operator, simulators, ...), then
# llmd-pod-runner (it stops its pods and removes their network while the API
# server still runs), then the control plane in reverse start order; then removes
# whatever is left of the live pod network (namespaces, veths, the bridge). SIGTERM (to the process group when the process
# leads one), then SIGKILL after LLMD_STOP_TIMEOUT seconds (default 20). Waits
# until the processes are gone and the recorded ports are free. Safe to run when
# nothing is running.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
STOP_TIMEOUT="${LLMD_STOP_TIMEOUT:-20}"

[[ -d "$LLMD_CLUSTER_DIR" ]] || { log "no cluster state in $LLMD_CLUSTER_DIR; nothing to do"; exit 0; }
STATE="$(llmd_state_dir)"
# Only a directory cluster-up marked as a cluster's state is ever emptied or removed.
ORIGIN="$(llmd_state_origin "$STATE")"
[[ -n "$ORIGIN" ]] || { log "$STATE holds no cluster state (no $LLMD_STATE_MARKER); nothing removed"; exit 0; }
if [[ "${LLMD_CLUSTER_LOCKED:-}" != 1 ]]; then
  exec 8>"$(dirname "$STATE")/.$(basename "$STATE").lock"
  flock 8
fi

# stop <pidfile>
stop() {
  local f="$1" name pid pgid target
  name="$(basename "$f" .pid)"
  if ! pid_alive "$f"; then rm -f "$f"; return 0; fi
  pid="$(cat "$f")"
  pgid="$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')"
  target="$pid"
  [[ "$pgid" == "$pid" ]] && target="-$pid"   # whole process group
  log "stopping $name (pid $pid)"
  kill -TERM -- "$target" 2>/dev/null || true
  if ! wait_until "$STOP_TIMEOUT" "$name to exit" proc_gone "$target"; then
    log "$name did not exit after SIGTERM; sending SIGKILL"
    kill -KILL -- "$target" 2>/dev/null || true
    wait_until 10 "$name to die" proc_gone "$target" || die "could not stop $name (pid $pid)"
  fi
  rm -f "$f"
}

# stop_all <pidfile...>: stop these in parallel.
stop_all() {
  local f pids=() rc=0
  for f in "$@"; do [[ -e "$f" ]] && { stop "$f" & pids+=($!); }; done
  for f in "${pids[@]}"; do wait "$f" || rc=1; done
  ((rc == 0)) || die "failed to stop: $*"
}

if [[ -d "$STATE/pids" ]]; then
  # 1. processes registered by other scripts (operator, simulators, ...)
  others=()
  for f in "$STATE"/pids/*.pid; do
    [[ -e "$f" ]] || continue
    n="$(basename "$f" .pid)"
    [[ " ${LLMD_CORE[*]} " == *" $n "* ]] || others+=("$f")
  done
  ((${#others[@]} == 0)) || stop_all "${others[@]}"
  P="$STATE/pids"
  # 2. the pod runner, while the API server can still take its pods' final status
  stop_all "$P/llmd-pod-runner.pid"
  # 3. the control plane: its clients together, then kube-apiserver, then etcd
  stop_all "$P/kwok.pid" "$P/kube-scheduler.pid" "$P/kube-controller-manager.pid"
  stop_all "$P/kube-apiserver.pid"
  stop_all "$P/etcd.pid"
fi

if [[ -f "$STATE/ports.env" ]]; then
  ports="$(cut -d= -f2 "$STATE/ports.env" | tr '\n' ' ')"
  ports_free() { local p; for p in $ports; do ! port_listening "$p" || return 1; done; }
  wait_until 30 "ports $ports to be released" ports_free || die "ports still in use: $ports"
fi

# The live pod network: what a killed runner left, and the bridge cluster-up made.
if [[ -f "$STATE/live.env" ]]; then
  prefix="$(sed -n 's/^LIVE_PREFIX=//p' "$STATE/live.env")"
  [[ -n "$prefix" ]] && live_net_cleanup "$prefix"
fi

if [[ "$ORIGIN" == created ]]; then
  rm -rf "$STATE"
else
  # A directory that existed (empty) before cluster-up: empty it, keep it.
  find "$STATE" -mindepth 1 -delete
fi
[[ "${LLMD_CLUSTER_LOCKED:-}" == 1 ]] || rm -f "$(dirname "$STATE")/.$(basename "$STATE").lock"
log "cluster in $STATE stopped and its state removed"
