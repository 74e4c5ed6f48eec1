#!/usr/bin/env bash
# Start a local Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler) plus kwok with fake GPU nodes, all as
# plain processes on 127.0.0.1. No containers: kwok marks pods on the fake nodes
# Running/Ready and gives them loopback pod IPs ($LLMD_POD_CIDR).
#
# With live nodes (LLMD_LIVE_NODES=1, the default as root) llmd-pod-runner also
# registers live-gpu-0..3 and live-cpu-0 and runs every pod bound to them as real
# processes, one network namespace per pod on a bridge with its own 10.2xx.0.0/16;
# a namespace opts in with e2e/hack/live-namespace.sh (see e2e/README.md).
#
# Idempotent: if the cluster in $LLMD_CLUSTER_DIR is already healthy it is reused.
# Progress goes to stderr; the only stdout line is `export KUBECONFIG=<path>`, so
#   eval "$(e2e/hack/cluster-up.sh)"
# works. See lib.sh for the environment variables.
#
# State dir layout: kubeconfig (admin), env (sourceable: KUBECONFIG, LLMD_BIN_DIR,
# ports, live network), ports.env, live.env, pod-runner.yaml, pod-runner/ (pods'
# files and logs), pki/, etcd/, logs/<name>.log, pids/<name>.pid. Other scripts
# may register their own processes as pids/<name>.pid; cluster-down stops them.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ORIGIN=adopted
[[ -e "$LLMD_CLUSTER_DIR" ]] || ORIGIN=created
STATE="$(llmd_state_dir)"
LOCK="$(dirname "$STATE")/.$(basename "$STATE").lock"
exec 8>"$LOCK"
flock 8
# Never take over a directory that holds anything but a cluster's state.
if [[ -z "$(llmd_state_origin "$STATE")" ]]; then
  [[ -z "$(ls -A "$STATE")" ]] || die "$STATE is not empty and holds no cluster state (no $LLMD_STATE_MARKER): set LLMD_CLUSTER_DIR to a new or empty directory"
  echo "$ORIGIN" >"$STATE/$LLMD_STATE_MARKER"
fi
[[ -f "$STATE/$LLMD_STATE_MARKER" ]] || llmd_state_origin "$STATE" >"$STATE/$LLMD_STATE_MARKER"

# --- tools ------------------------------------------------------------------
if [[ -z "${LLMD_BIN_DIR:-}" ]]; then
  if ! "$LLMD_HACK_DIR/build-tools.sh" --check; then
    log "tools not built yet; running build-tools.sh (cold build takes a long time)"
    "$LLMD_HACK_DIR/build-tools.sh" >&2
  fi
  LLMD_BIN_DIR="$("$LLMD_HACK_DIR/build-tools.sh" --print-bin-dir)"
fi
BIN="$LLMD_BIN_DIR"
for t in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok; do
  [[ -x "$BIN/$t" ]] || die "$BIN/$t missing (run e2e/hack/build-tools.sh)"
done
KUBECONFIG_PATH="$STATE/kubeconfig"
kubectl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

if [[ "$LLMD_LIVE_NODES" == 1 ]]; then
  [[ "$(id -u)" == 0 ]] || die "live nodes need root (network namespaces, veth pairs, a bridge); run as root, or set LLMD_LIVE_NODES=0 for a control plane without a data plane"
  command -v ip >/dev/null || die "live nodes need iproute2 ('ip'); install it or set LLMD_LIVE_NODES=0"
  [[ -x "$LLMD_POD_RUNNER_BIN" ]] || die "$LLMD_POD_RUNNER_BIN missing: build it with 'cargo build -p llmd-pod-runner' (make cluster-up does) or set LLMD_POD_RUNNER_BIN"
fi

NODES=()
for ((i = 0; i < LLMD_GPU_NODES; i++)); do NODES+=("gpu-node-$i"); done
for ((i = 0; i < LLMD_CPU_NODES; i++)); do NODES+=("cpu-node-$i"); done
LIVE_NODES=()
if [[ "$LLMD_LIVE_NODES" == 1 ]]; then
  for ((i = 0; i < LLMD_LIVE_GPU_NODES; i++)); do LIVE_NODES+=("live-gpu-$i"); done
  for ((i = 0; i < LLMD_LIVE_CPU_NODES; i++)); do LIVE_NODES+=("live-cpu-$i"); done
fi

all_nodes_ready() {
  local ready
  ready="$(kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}')" || return 1
  local n
  for n in "${NODES[@]}"; do grep -qx "$n=True" <<<"$ready" || return 1; done
}

live_nodes_ready() {
  local ready n
  ready="$(kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}')" || return 1
  for n in "${LIVE_NODES[@]}"; do grep -qx "$n=True" <<<"$ready" || return 1; done
}

healthy() {
  [[ -f "$STATE/ports.env" && -f "$KUBECONFIG_PATH" ]] || return 1
  # Live nodes as requested now (a cluster without them is not reused for a run
  # that wants them, and the other way round).
  if [[ "$LLMD_LIVE_NODES" == 1 ]]; then [[ -f "$STATE/live.env" ]] || return 1; else [[ ! -f "$STATE/live.env" ]] || return 1; fi
  local c
  for c in "${LLMD_CORE[@]}"; do
    [[ "$c" == llmd-pod-runner && "$LLMD_LIVE_NODES" != 1 ]] && continue
    pid_alive "$STATE/pids/$c.pid" || return 1
  done
  [[ "$(kubectl get --raw /readyz 2>/dev/null)" == ok ]] || return 1
  all_nodes_ready && live_nodes_ready
}

print_export() { echo "export KUBECONFIG=$KUBECONFIG_PATH"; }

# start_pod_runner: run llmd-pod-runner detached (its own session) and wait until
# it registered its nodes.
start_pod_runner() {
  local pidfile="$STATE/pids/llmd-pod-runner.pid" log="$STATE/logs/llmd-pod-runner.log" before
  # The log is appended across restarts: wait for a registration of this instance.
  registrations() { local c; c="$(grep -c "nodes registered" "$log" 2>/dev/null || true)"; echo "${c:-0}"; }
  before="$(registrations)"
  log "starting llmd-pod-runner ($LLMD_POD_RUNNER_BIN)"
  RUST_LOG="${LLMD_POD_RUNNER_LOG:-info}" setsid "$LLMD_POD_RUNNER_BIN" --config "$STATE/pod-runner.yaml" \
    --kubeconfig "$KUBECONFIG_PATH" >>"$log" 2>&1 </dev/null 8>&- &
  echo $! >"$pidfile"
  local deadline=$((SECONDS + LLMD_CLUSTER_TIMEOUT))
  until (($(registrations) > before)) && live_nodes_ready; do
    if ! pid_alive "$pidfile"; then
      tail -n 30 "$log" >&2 || true
      die "llmd-pod-runner failed to start (log: $log)"
    fi
    ((SECONDS < deadline)) || die "timed out waiting for the live nodes (log: $log)"
    sleep 0.2
  done
  log "live nodes Ready: ${LIVE_NODES[*]}"
}

if healthy; then
  log "cluster in $STATE is already running and healthy; reusing it"
  runner_pid="$STATE/pids/llmd-pod-runner.pid"
  if [[ "$LLMD_LIVE_NODES" == 1 && "$LLMD_POD_RUNNER_BIN" -nt "$runner_pid" ]]; then
    log "llmd-pod-runner was rebuilt since it started; restarting it (its pods restart)"
    pid="$(cat "$runner_pid")"
    kill -TERM "$pid" 2>/dev/null || true
    wait_until 30 "llmd-pod-runner to exit" proc_gone "$pid" || die "llmd-pod-runner (pid $pid) did not stop"
    start_pod_runner
  fi
  print_export
  exit 0
fi
if [[ -n "$(ls -A "$STATE" | grep -vx "$LLMD_STATE_MARKER" || true)" ]]; then
  log "found stale/unhealthy cluster state in $STATE; cleaning it up first"
  origin="$(cat "$STATE/$LLMD_STATE_MARKER")"
  LLMD_CLUSTER_LOCKED=1 "$LLMD_HACK_DIR/cluster-down.sh" >&2
  mkdir -p "$STATE"
  echo "$origin" >"$STATE/$LLMD_STATE_MARKER"
fi

mkdir -p "$STATE"/{pki,logs,pids,etcd,kwok}
chmod 700 "$STATE/etcd"
PKI="$STATE/pki"

# --- ports ------------------------------------------------------------------
ETCD_PORT="$(free_port)"
ETCD_PEER_PORT="$(free_port "$ETCD_PORT")"
APISERVER_PORT="$(free_port "$ETCD_PORT" "$ETCD_PEER_PORT")"
CM_PORT="$(free_port "$ETCD_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT")"
SCHED_PORT="$(free_port "$ETCD_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$CM_PORT")"
KWOK_PORT="$(free_port "$ETCD_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$CM_PORT" "$SCHED_PORT")"
cat >"$STATE/ports.env" <<EOF
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
CONTROLLER_MANAGER_PORT=$CM_PORT
SCHEDULER_PORT=$SCHED_PORT
KWOK_PORT=$KWOK_PORT
EOF
log "ports: etcd=$ETCD_PORT/$ETCD_PEER_PORT apiserver=$APISERVER_PORT controller-manager=$CM_PORT scheduler=$SCHED_PORT kwok=$KWOK_PORT"

# --- live pod network -----------------------------------------------------------
# A bridge llmd<N>br with 10.<N>.0.1/16, N picked among 200-254 so that nothing on
# this machine uses the range. Creating the bridge is the reservation: `ip link add`
# fails for a name another cluster took first, so concurrent clusters never share a
# range. Made here rather than by llmd-pod-runner because the API server
# certificate must name the gateway address before the runner exists.
APISERVER_SANS=""
APISERVER_BIND=127.0.0.1
if [[ "$LLMD_LIVE_NODES" == 1 ]]; then
  probe_ns="llmdprobe-$$"
  ip netns add "$probe_ns" 2>/dev/null && ip netns del "$probe_ns" \
    || die "cannot create network namespaces (needs CAP_NET_ADMIN); set LLMD_LIVE_NODES=0 to run without live nodes"
  LIVE_N=""
  in_use="$(ip -4 -o addr show; ip -4 route show)"
  for n in $(shuf -i 200-254); do
    grep -qE "(^| )10\.$n\." <<<"$in_use" && continue
    ip link add "llmd${n}br" type bridge 2>/dev/null || continue
    LIVE_N="$n"
    break
  done
  [[ -n "$LIVE_N" ]] || die "no free 10.2xx.0.0/16 for the pod network"
  LIVE_PREFIX="llmd$LIVE_N"
  printf '%s\n' "LIVE_PREFIX=$LIVE_PREFIX" "LIVE_BRIDGE=${LIVE_PREFIX}br" \
    "LIVE_CIDR=10.$LIVE_N.0.0/16" "LIVE_GATEWAY=10.$LIVE_N.0.1" >"$STATE/live.env"
  ip addr add "10.$LIVE_N.0.1/16" dev "${LIVE_PREFIX}br"
  ip link set "${LIVE_PREFIX}br" up
  log "pod network: bridge ${LIVE_PREFIX}br, 10.$LIVE_N.0.0/16"
  # Pods reach the API server at the gateway address.
  APISERVER_SANS=",IP:10.$LIVE_N.0.1"
  APISERVER_BIND=0.0.0.0
fi

# --- certificates -------------------------------------------------------------
# First IP of the service range (the `kubernetes` Service ClusterIP).
IFS=./ read -r s1 s2 s3 s4 _ <<<"$LLMD_SERVICE_CIDR"
SVC_IP="$s1.$s2.$s3.$((s4 + 1))"
log "generating certificates"
(
  cd "$PKI"
  openssl_q() { openssl "$@" 2>/dev/null; }
  # ca <name> <CN>
  ca() {
    openssl_q req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout "$1.key" -out "$1.crt" -days 3650 -subj "/CN=$2"
  }
  ca ca llmd-e2e-ca
  ca front-proxy-ca llmd-e2e-front-proxy-ca
  # cert <name> <subject> <extensions> [ca name]
  cert() {
    local ca="${4:-ca}"
    openssl_q req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout "$1.key" -out "$1.csr" -subj "$2"
    printf '%b' "$3" >"$1.ext"
    openssl_q x509 -req -in "$1.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial \
      -days 3650 -out "$1.crt" -extfile "$1.ext"
    rm -f "$1.csr" "$1.ext"
  }
  cert apiserver "/CN=kube-apiserver" \
    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,IP:$SVC_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local$APISERVER_SANS\n"
  client_ext="basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
  cert admin "/O=system:masters/CN=kubernetes-admin" "$client_ext"
  cert controller-manager "/CN=system:kube-controller-manager" "$client_ext"
  cert scheduler "/CN=system:kube-scheduler" "$client_ext"
  # Aggregation layer (request-header auth); also keeps controller-manager and
  # scheduler from logging a missing requestheader CA bundle.
  cert front-proxy-client "/CN=front-proxy-client" "$client_ext" front-proxy-ca
  openssl_q genrsa -out sa.key 2048
  openssl_q rsa -in sa.key -pubout -out sa.pub
  chmod 600 ./*.key
)

# kubeconfig <file> <cert name>
write_kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: llmd-e2e
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$2.crt")
    client-key-data: $(base64 -w0 "$PKI/$2.key")
contexts:
- name: llmd-e2e
  context:
    cluster: llmd-e2e
    user: $2
current-context: llmd-e2e
EOF
  chmod 600 "$1"
}
write_kubeconfig "$STATE/controller-manager.kubeconfig" controller-manager
write_kubeconfig "$STATE/scheduler.kubeconfig" scheduler
write_kubeconfig "$KUBECONFIG_PATH.tmp" admin

# --- processes ----------------------------------------------------------------
# start <name> <command...>: run detached in its own session (pgid == pid).
start() {
  local name="$1"; shift
  log "starting $name"
  # 8>&-: the daemon must not inherit the state-dir lock (it would hold it forever).
  setsid "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null 8>&- &
  echo $! >"$STATE/pids/$name.pid"
}
# await <name> <description> <probe...>: poll the probe; fail fast if <name> died.
await() {
  local name="$1" desc="$2"; shift 2
  local deadline=$((SECONDS + LLMD_CLUSTER_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if ! pid_alive "$STATE/pids/$name.pid"; then
      log "$name exited; last log lines ($STATE/logs/$name.log):"
      tail -n 30 "$STATE/logs/$name.log" >&2 || true
      die "$name failed to start"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$STATE/logs/$name.log" >&2 || true
      die "timed out waiting for $desc"
    fi
    sleep 0.2
  done
  log "$desc: ok"
}
CURL=(curl -fsS --max-time 5)
etcd_ok() { [[ "$("${CURL[@]}" "http://127.0.0.1:$ETCD_PORT/health")" == *'"health":"true"'* ]]; }
apiserver_ok() {
  [[ "$("${CURL[@]}" --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT/readyz")" == ok ]]
}
https_healthz_ok() { [[ "$("${CURL[@]}" -k "https://127.0.0.1:$1/healthz")" == ok ]]; }
kwok_ok() { [[ "$("${CURL[@]}" "http://127.0.0.1:$KWOK_PORT/healthz")" == ok ]]; }

start etcd "$BIN/etcd" \
  --name=llmd-e2e \
  --data-dir="$STATE/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="llmd-e2e=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync=true \
  --log-level=warn
await etcd "etcd /health" etcd_ok

# PodNodeSelector and PodTolerationRestriction let a namespace put all its pods on
# the live nodes (annotations, see live-namespace.sh); without them they do nothing.
start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address="$APISERVER_BIND" \
  --advertise-address=127.0.0.1 \
  --secure-port="$APISERVER_PORT" \
  --cert-dir="$PKI" \
  --tls-cert-file="$PKI/apiserver.crt" \
  --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User \
  --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
  --proxy-client-key-file="$PKI/front-proxy-client.key" \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=PodNodeSelector,PodTolerationRestriction \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" \
  --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range="$LLMD_SERVICE_CIDR" \
  --allow-privileged=true \
  --endpoint-reconciler-type=none \
  --profiling=false
await kube-apiserver "kube-apiserver /readyz" apiserver_ok
mv "$KUBECONFIG_PATH.tmp" "$KUBECONFIG_PATH"

# Their client-side API rate limits, when raised (bench-scale).
RATE_FLAGS=()
if [[ -n "$LLMD_KUBE_API_QPS" ]]; then
  RATE_FLAGS=(--kube-api-qps="$LLMD_KUBE_API_QPS" --kube-api-burst="$((LLMD_KUBE_API_QPS * 2))")
fi

start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="$CM_PORT" \
  --service-account-private-key-file="$PKI/sa.key" \
  --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" \
  --cluster-signing-key-file="$PKI/ca.key" \
  --use-service-account-credentials=true \
  --service-cluster-ip-range="$LLMD_SERVICE_CIDR" \
  --controllers='*' \
  --leader-elect=false \
  --profiling=false \
  "${RATE_FLAGS[@]}"

start kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig="$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
  --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="$SCHED_PORT" \
  --leader-elect=false \
  --profiling=false \
  "${RATE_FLAGS[@]}"

# kwok >= v0.8 has no built-in stages: pass the upstream "fast" pod/node stages and
# the lease-based node heartbeat shipped next to the binary by build-tools.sh.
STAGES="$(ls "$BIN"/kwok-stages/*.yaml | paste -sd, -)"
KWOK_WORKDIR="$STATE/kwok" start kwok "$BIN/kwok" \
  --kubeconfig="$KUBECONFIG_PATH" \
  -c "$STAGES" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --cidr="$LLMD_POD_CIDR" \
  --node-ip=127.0.0.1 \
  --node-lease-duration-seconds=40 \
  --server-address="127.0.0.1:$KWOK_PORT"

await kube-controller-manager "kube-controller-manager /healthz" https_healthz_ok "$CM_PORT"
await kube-scheduler "kube-scheduler /healthz" https_healthz_ok "$SCHED_PORT"
await kwok "kwok /healthz" kwok_ok

# --- fake nodes -----------------------------------------------------------------
# node <name> <labels yaml> <cpu> <memory> <extra capacity yaml>
node_yaml() {
  cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $1
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: $1
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
$2
status:
  capacity: &res
    cpu: "$3"
    memory: $4
    ephemeral-storage: 1Ti
    pods: "110"
$5
  allocatable: *res
  addresses:
  - type: InternalIP
    address: 127.0.0.1
  - type: Hostname
    address: $1
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
EOF
}
{
  for ((i = 0; i < LLMD_GPU_NODES; i++)); do
    node_yaml "gpu-node-$i" \
"    node.kubernetes.io/instance-type: p5.48xlarge
    nvidia.com/gpu.present: \"true\"
    nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3
    nvidia.com/gpu.count: \"8\"
    nvidia.com/gpu.memory: \"81559\"" \
      96 1Ti "    nvidia.com/gpu: \"8\""
  done
  for ((i = 0; i < LLMD_CPU_NODES; i++)); do
    node_yaml "cpu-node-$i" "    node.kubernetes.io/instance-type: m5.8xlarge" 32 128Gi ""
  done
} >"$STATE/nodes.yaml"
log "creating nodes: ${NODES[*]}"
kubectl create -f "$STATE/nodes.yaml" >/dev/null

await kwok "all ${#NODES[@]} nodes Ready" all_nodes_ready
await kube-controller-manager "namespace default and ServiceAccount default/default" \
  kubectl -n default get serviceaccount default

# --- live nodes -------------------------------------------------------------------
if [[ "$LLMD_LIVE_NODES" == 1 ]]; then
  abs() { realpath -m "$1"; }
  # Real NIXL for the engine image's python3 (built once into the cache; about 340 MB).
  NIXL_PYTHON="$("$LLMD_HACK_DIR/nixl-venv.sh" | tail -n 1)"
  SIM_ARGS="${LLMD_SIM_ARGS:---latency-calculator per-token --prefill-overhead 10ms --prefill-time-per-token 1ms --inter-token-latency 5ms --enable-kvcache --kv-cache-size 1024 --block-size 16}"
  yaml_list() { local w out=""; for w in $1; do out+="\"$w\", "; done; echo "[${out%, }]"; }
  # live_node <name> <cpu> <memory> <gpus>
  live_node() {
    echo "- name: $1"
    echo "  labels:"
    echo "    llmd.dev/live: \"true\""
    echo "    type: live"
    if [[ "$4" != 0 ]]; then
      echo "    node.kubernetes.io/instance-type: p5.48xlarge"
      echo "    nvidia.com/gpu.present: \"true\""
      echo "    nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3"
      echo "    nvidia.com/gpu.count: \"$4\""
      echo "    nvidia.com/gpu.memory: \"81559\""
      echo "  capacity: {cpu: \"$2\", memory: $3, pods: \"110\", ephemeral-storage: 1Ti, nvidia.com/gpu: \"$4\"}"
    else
      echo "    node.kubernetes.io/instance-type: m5.8xlarge"
      echo "  capacity: {cpu: \"$2\", memory: $3, pods: \"110\", ephemeral-storage: 1Ti}"
    fi
    echo "  taints: [{key: llmd.dev/live, value: \"true\", effect: NoSchedule}]"
  }
  {
    echo "# Written by cluster-up.sh; see crates/pod-runner/README.md."
    echo "stateDir: \"$STATE/pod-runner\""
    echo "apiServer: {host: \"10.$LIVE_N.0.1\", port: $APISERVER_PORT, caFile: \"$PKI/ca.crt\"}"
    echo "network: {bridge: ${LIVE_PREFIX}br, linkPrefix: $LIVE_PREFIX, cidr: 10.$LIVE_N.0.0/16}"
    echo "images:"
    echo "- repositories: [vllm/vllm-openai]"
    echo "  run: simulator"
    echo "  binary: \"$BIN/llm-d-inference-sim\""
    # The engine image's python3, with real NIXL (the KV fabric probe Jobs).
    echo "  commands: {python3: \"$NIXL_PYTHON\"}"
    echo "  extraArgs: $(yaml_list "$SIM_ARGS")"
    echo "- repositories: [ghcr.io/llmd-dev/llmd-epp]"
    echo "  run: binary"
    echo "  binary: \"$(abs "$LLMD_EPP_BIN")\""
    echo "  commands: {\"/usr/local/bin/llmd-sidecar\": \"$(abs "$LLMD_SIDECAR_BIN")\"}"
    echo "- repositories: [ghcr.io/llmd-dev/llmd-operator]"
    echo "  run: binary"
    echo "  binary: \"$(abs "$LLMD_OPERATOR_BIN")\""
    echo "nodes:"
    for ((i = 0; i < LLMD_LIVE_GPU_NODES; i++)); do live_node "live-gpu-$i" 96 1Ti 8; done
    for ((i = 0; i < LLMD_LIVE_CPU_NODES; i++)); do live_node "live-cpu-$i" 32 128Gi 0; done
  } >"$STATE/pod-runner.yaml"
  for b in "$LLMD_EPP_BIN" "$LLMD_SIDECAR_BIN" "$LLMD_OPERATOR_BIN"; do
    [[ -x "$b" ]] || log "warning: $b missing; pods with its image wait (CreateContainerError) until it is built"
  done
  start_pod_runner
fi
await kube-apiserver "cluster healthy" healthy

{
  echo "export KUBECONFIG=$KUBECONFIG_PATH"
  echo "export LLMD_CLUSTER_DIR=$STATE"
  echo "export LLMD_BIN_DIR=$BIN"
  sed 's/^/export LLMD_/' "$STATE/ports.env"
  if [[ -f "$STATE/live.env" ]]; then
    sed 's/^/export LLMD_/' "$STATE/live.env"
    echo "export LLMD_POD_RUNNER_STATE=$STATE/pod-runner"
  fi
} >"$STATE/env"
log "cluster is up ($("$BIN/kubectl" version --kubeconfig "$KUBECONFIG_PATH" 2>/dev/null | sed -n 's/^Server Version: //p')); state in $STATE"
print_export
