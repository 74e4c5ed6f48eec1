#!/usr/bin/env bash
# demo.sh: the README's main job. Brings up the local control plane with live GPU
# nodes (llmd-pod-runner runs their pods as processes), installs the CRD, runs
# llmd-operator, applies the P/D sample in a live namespace, waits until every pod
# really answers its probes, and sends requests through the EndpointPicker pod.
# Everything stays up; `make cluster-down` stops it all. Needs root (live nodes).
set -euo pipefail
HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HACK/../.." && pwd)"
NS="${LLMD_DEMO_NAMESPACE:-llmd-demo}"
OPERATOR="${LLMD_OPERATOR_BIN:-$ROOT/target/debug/llmd-operator}"
MODEL="meta-llama/Llama-3.1-8B-Instruct"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "local control plane"
if [[ "${LLMD_LIVE_NODES:-}" == 0 || "$(id -u)" != 0 ]]; then
  echo "make demo runs the sample's pods on live nodes, which need root (network namespaces);" >&2
  echo "run it as root (LLMD_LIVE_NODES=0 has no data plane to demo)" >&2
  exit 1
fi
export LLMD_LIVE_NODES=1
export LLMD_CLUSTER_DIR="${LLMD_CLUSTER_DIR:-${LLMD_CACHE:-$HOME/.cache/llmd-operator}/cluster}"
eval "$("$HACK/cluster-up.sh")"
# shellcheck disable=SC1091
source "$LLMD_CLUSTER_DIR/env"
export PATH="$LLMD_BIN_DIR:$PATH"
kubectl get nodes -L nvidia.com/gpu.product,llmd.dev/live -o wide

say "CRD"
kubectl apply --server-side --force-conflicts -f "$ROOT/crds/"
until kubectl get llmd -A >/dev/null 2>&1; do sleep 0.5; done

say "operator"
pidfile="$LLMD_CLUSTER_DIR/pids/llmd-operator.pid"
if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "llmd-operator already running (pid $(cat "$pidfile"))"
else
  rm -f "$pidfile"
  free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
  metrics_port="$(free_port)"; health_port="$(free_port)"
  "$HACK/spawn.sh" llmd-operator "$OPERATOR" run \
    --metrics-addr "127.0.0.1:$metrics_port" --health-addr "127.0.0.1:$health_port" >/dev/null
  echo "$metrics_port" >"$LLMD_CLUSTER_DIR/operator-metrics-port"
  until curl -fsS "http://127.0.0.1:$health_port/readyz" >/dev/null 2>&1; do
    kill -0 "$(cat "$pidfile")" 2>/dev/null || { cat "$LLMD_CLUSTER_DIR/logs/llmd-operator.log"; exit 1; }
    sleep 0.5
  done
  echo "llmd-operator running (pid $(cat "$pidfile")), metrics on http://127.0.0.1:$metrics_port/metrics"
fi

say "LLMDeployment llama-pd (config/samples/llmd_v1alpha1_pd_nixl.yaml)"
"$HACK/live-namespace.sh" "$NS"
kubectl apply -n "$NS" -f "$ROOT/config/samples/llmd_v1alpha1_pd_nixl.yaml"
kubectl wait -n "$NS" --for=condition=Ready llmd/llama-pd --timeout=180s

say "kubectl get llmd -o wide"
kubectl get llmd -n "$NS" -o wide

say "conditions"
kubectl get llmd llama-pd -n "$NS" \
  -o go-template='{{range .status.conditions}}{{printf "%-20s %-6s %-20s %s\n" .type .status .reason .message}}{{end}}'

say "children"
kubectl get statefulsets,deployments,services,configmaps,serviceaccounts,roles,rolebindings \
  -n "$NS" -l app.kubernetes.io/instance=llama-pd

say "data plane: the pods themselves, on live nodes"
# llmd-pod-runner runs every pod of this namespace as a process at its own pod IP:
# 4 prefill and 4 decode llm-d-inference-sim processes for the vLLM pods, llmd-epp
# for the EndpointPicker pod (reading its mounted config, watching pods with its own
# ServiceAccount). Ready above meant every probe really passed.
kubectl get pods -n "$NS" -o wide -L llm-d.ai/role
EPP_IP="$(kubectl get pods -n "$NS" -l app.kubernetes.io/instance=llama-pd,app.kubernetes.io/component=endpoint-picker \
  -o jsonpath='{.items[0].status.podIP}')"
[[ -n "$EPP_IP" ]] || { echo "no EndpointPicker pod IP" >&2; exit 1; }
proxy="http://$EPP_IP:8080"
until curl -fsS --noproxy '*' "$proxy/v1/models" >/dev/null 2>&1; do sleep 0.2; done
echo "llmd-epp pod $EPP_IP: proxy $proxy, metrics http://$EPP_IP:9090/metrics"
echo "logs: $LLMD_POD_RUNNER_STATE/pods/<namespace>_<pod>_<uid>/<container>.log"

ask() {
  local prompt="$1"
  curl -sS --noproxy '*' -D "$LLMD_CLUSTER_DIR/last-headers" "$proxy/v1/chat/completions" \
    -H 'content-type: application/json' \
    -d "{\"model\":\"$MODEL\",\"max_tokens\":12,\"messages\":[{\"role\":\"user\",\"content\":\"$prompt\"}]}" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print("   answer:", r["choices"][0]["message"]["content"])'
  grep -i '^x-inference-pod' "$LLMD_CLUSTER_DIR/last-headers" | sed 's/^/   served by /' || true
}
echo "-> a short question (decode only):"
ask "What is the capital of France?"
long="$(python3 -c 'print(" ".join(f"clause {i} of the master services agreement between the parties" for i in range(60)))')"
echo "-> a long uncached prompt (split into prefill + decode over the simulated KV transfer):"
ask "$long. Summarise the agreement."
echo "-> the EndpointPicker's P/D decisions so far:"
curl -fsS --noproxy '*' "http://$EPP_IP:9090/metrics" | grep '^llmd_epp_pd_decisions' | sed 's/^/   /'

cat <<MSG

The demo is running. Explore it:
  export KUBECONFIG=$KUBECONFIG
  export PATH=$LLMD_BIN_DIR:\$PATH
  kubectl describe llmd llama-pd -n $NS
  kubectl get cm llama-pd-epp-config -n $NS -o jsonpath='{.data.config\.yaml}'
  kubectl patch llmd llama-pd -n $NS --type merge -p '{"spec":{"decode":{"replicas":2}}}'
  kubectl delete pod llama-pd-decode-0 -n $NS      # the runner stops it; the StatefulSet brings it back
  tail -f $LLMD_CLUSTER_DIR/logs/llmd-operator.log $LLMD_CLUSTER_DIR/logs/llmd-pod-runner.log
  curl -s $proxy/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"$MODEL","messages":[{"role":"user","content":"hi"}]}'

Tear everything down (control plane, operator, the pods' processes and network):
  make cluster-down
MSG
