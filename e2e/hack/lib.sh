# Shared settings and helpers for the e2e cluster scripts. Source, don't execute.
# Everything is parameterized by environment variables so a test harness can run
# several independent clusters side by side (one state dir each):
#
#   LLMD_CACHE         cache root                (default ~/.cache/llmd-operator)
#   LLMD_CLUSTER_DIR   cluster state dir         (default $LLMD_CACHE/cluster)
#   LLMD_BIN_DIR       tool binaries             (default: from build-tools.sh)
#   LLMD_POD_CIDR      kwok pod IP range         (default 127.80.0.0/16, loopback)
#   LLMD_SERVICE_CIDR  service cluster IP range  (default 10.96.0.0/16)
#   LLMD_GPU_NODES     fake GPU nodes            (default 4: gpu-node-0..3)
#   LLMD_CPU_NODES     fake CPU-only nodes       (default 1: cpu-node-0)
#   LLMD_CLUSTER_TIMEOUT  seconds to wait for each readiness step (default 120)
#   LLMD_KUBE_API_QPS  API rate limit of the controller-manager and the scheduler
#                      (default: theirs, 20 QPS; burst twice it); raised by bench-scale
#   LLMD_LIVE_NODES    1: run llmd-pod-runner with live nodes (default when root), 0: not
#   LLMD_LIVE_GPU_NODES / LLMD_LIVE_CPU_NODES   live node counts (default 4 / 1)
#   LLMD_POD_RUNNER_BIN, LLMD_EPP_BIN, LLMD_SIDECAR_BIN, LLMD_OPERATOR_BIN   our binaries (default:
#                      ${CARGO_TARGET_DIR:-<repo>/target}/debug/<name>)

LLMD_HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LLMD_CACHE="${LLMD_CACHE:-$HOME/.cache/llmd-operator}"
LLMD_CLUSTER_DIR="${LLMD_CLUSTER_DIR:-$LLMD_CACHE/cluster}"
LLMD_POD_CIDR="${LLMD_POD_CIDR:-127.80.0.0/16}"
LLMD_SERVICE_CIDR="${LLMD_SERVICE_CIDR:-10.96.0.0/16}"
LLMD_GPU_NODES="${LLMD_GPU_NODES:-4}"
LLMD_CPU_NODES="${LLMD_CPU_NODES:-1}"
LLMD_CLUSTER_TIMEOUT="${LLMD_CLUSTER_TIMEOUT:-120}"
LLMD_KUBE_API_QPS="${LLMD_KUBE_API_QPS:-}"
if [[ -z "${LLMD_LIVE_NODES:-}" ]]; then
  if [[ "$(id -u)" == 0 ]]; then LLMD_LIVE_NODES=1; else LLMD_LIVE_NODES=0; fi
fi
LLMD_LIVE_GPU_NODES="${LLMD_LIVE_GPU_NODES:-4}"
LLMD_LIVE_CPU_NODES="${LLMD_LIVE_CPU_NODES:-1}"
LLMD_REPO_DIR="$(cd "$LLMD_HACK_DIR/../.." && pwd)"
LLMD_RUST_TARGET="${CARGO_TARGET_DIR:-$LLMD_REPO_DIR/target}"
LLMD_POD_RUNNER_BIN="${LLMD_POD_RUNNER_BIN:-$LLMD_RUST_TARGET/debug/llmd-pod-runner}"
LLMD_EPP_BIN="${LLMD_EPP_BIN:-$LLMD_RUST_TARGET/debug/llmd-epp}"
LLMD_SIDECAR_BIN="${LLMD_SIDECAR_BIN:-$LLMD_RUST_TARGET/debug/llmd-sidecar}"
LLMD_OPERATOR_BIN="${LLMD_OPERATOR_BIN:-$LLMD_RUST_TARGET/debug/llmd-operator}"
export LLMD_CACHE LLMD_CLUSTER_DIR

# Control-plane components in start order (cluster-down stops them in reverse,
# after every other registered process). llmd-pod-runner (live nodes only) comes
# last so that it is stopped first, while the API server can still take the
# final status of its pods.
LLMD_CORE=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok llmd-pod-runner)

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

# Absolute state dir (it is written into kubeconfigs and pid files).
llmd_state_dir() {
  mkdir -p "$LLMD_CLUSTER_DIR"
  (cd "$LLMD_CLUSTER_DIR" && pwd)
}

# The file that marks a directory as a cluster's state. It holds `created` when
# cluster-up made the directory (cluster-down removes it) or `adopted` when it was an
# empty directory already (cluster-down empties it and leaves it). A directory
# without it is never emptied or removed by these scripts.
LLMD_STATE_MARKER=.llmd-cluster-state

# llmd_state_origin <dir>: what the marker says; a state directory from before the
# marker existed (pids/ and ports.env, as cluster-up writes them) counts as created.
llmd_state_origin() {
  if [[ -f "$1/$LLMD_STATE_MARKER" ]]; then cat "$1/$LLMD_STATE_MARKER"
  elif [[ -d "$1/pids" && -f "$1/ports.env" ]]; then echo created
  fi
}

# wait_until <timeout-seconds> <description> <command...>: poll a condition.
wait_until() {
  local timeout="$1" desc="$2"; shift 2
  local deadline=$((SECONDS + timeout)) delay=0.1
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for: $desc"
      return 1
    fi
    sleep "$delay"
    [[ "$delay" == 0.1 ]] && delay=0.25 || delay=0.5
  done
}

# pid_alive <pidfile>: the recorded process still runs and is the one that was
# recorded (it did not start after the pid file was written, i.e. no pid reuse).
pid_alive() {
  local f="$1" pid etimes stat mtime
  pid="$(cat "$f" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  read -r etimes stat < <(ps -o etimes=,stat= -p "$pid" 2>/dev/null) || return 1
  [[ -n "$etimes" && "$stat" != Z* ]] || return 1
  mtime="$(stat -c %Y "$f")" || return 1
  # process start time <= pid file mtime (+ slack)
  (( $(date +%s) - etimes <= mtime + 5 ))
}

# proc_gone <pid | -pgid>: the process (or every process of the group) has exited.
# Zombies count as gone: orphans are reaped by pid 1, which may take a while.
proc_gone() {
  if [[ "$1" == -* ]]; then
    ! ps -e -o pgid=,stat= | awk -v g="${1#-}" '$1 == g && $2 !~ /^Z/ { f = 1 } END { exit !f }'
  else
    ! ps -o stat= -p "$1" 2>/dev/null | grep -qv '^Z'
  fi
}

# port_listening <port>: something listens on 127.0.0.1/any on that TCP port.
port_listening() {
  [[ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]]
}

# free_port: a TCP port nobody listens on and that is not in the reserved list
# given as arguments. Random in 20000-31999 so parallel clusters rarely race, and
# below the kernel's ephemeral range (32768+), where the local end of some outgoing
# connection can hold a port that nothing listens on.
free_port() {
  local p tries=0
  while ((tries++ < 2000)); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    [[ " $* " == *" $p "* ]] && continue
    port_listening "$p" && continue
    echo "$p"
    return 0
  done
  die "no free port found"
}

# live_net_cleanup <prefix>: remove every network namespace (<prefix>-*) and link
# (<prefix>v*, <prefix>br) of one cluster's pod network, killing what still runs in
# the namespaces. What llmd-pod-runner removes itself when it stops; this is for a
# runner that was killed.
live_net_cleanup() {
  local prefix="$1" ns pid link
  [[ "$prefix" =~ ^llmd[0-9]+$ ]] || return 0
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$prefix-" || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E "^$prefix(v|br)" || true); do
    ip link del "$link" 2>/dev/null || true
  done
}
