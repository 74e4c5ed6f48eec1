#!/usr/bin/env bash
# demo.sh: the README's main job. Brings up the local control plane (4 fake 8-GPU
# nodes), installs the CRD, runs llmd-operator, applies the P/D sample and shows what
# the operator built. Everything stays up; `make cluster-down` stops it all.
set -euo pipefail
HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HACK/../.." && pwd)"
NS="${LLMD_DEMO_NAMESPACE:-llmd-demo}"
OPERATOR="${LLMD_OPERATOR_BIN:-$ROOT/target/debug/llmd-operator}"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "local control plane"
export LLMD_CLUSTER_DIR="${LLMD_CLUSTER_DIR:-${LLMD_CACHE:-$HOME/.cache/llmd-operator}/cluster}"
eval "$("$HACK/cluster-up.sh")"
# shellcheck disable=SC1091
source "$LLMD_CLUSTER_DIR/env"
export PATH="$LLMD_BIN_DIR:$PATH"
kubectl get nodes -L nvidia.com/gpu.product -o wide

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
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
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
kubectl get pods -n "$NS" -o wide -L llm-d.ai/role

say "data plane: llm-d-inference-sim fleet behind llmd-epp"
# There is no kubelet, so the pods above run nothing. A local fleet of vLLM simulators
# stands in for them (2 prefill, 2 decode), routed by llmd-epp with the very
# EndpointPicker config the operator wrote to llama-pd-epp-config.
EPP="${LLMD_EPP_BIN:-$(dirname "$OPERATOR")/llmd-epp}"
SIM="$LLMD_BIN_DIR/llm-d-inference-sim"
MODEL="meta-llama/Llama-3.1-8B-Instruct"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
endpoints=()
for member in prefill-0 prefill-1 decode-0 decode-1; do
  pidfile="$LLMD_CLUSTER_DIR/pids/sim-$member.pid"
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    port="$(cat "$LLMD_CLUSTER_DIR/sim-$member.port")"
  else
    port="$(free_port)"
    POD_NAME="llama-pd-$member" POD_NAMESPACE="$NS" POD_IP=127.0.0.1 "$HACK/spawn.sh" "sim-$member" "$SIM" \
      --port "$port" --model "$MODEL" --max-model-len 16384 --enable-kvcache \
      --latency-calculator per-token --prefill-overhead 20ms --prefill-time-per-token 1ms \
      --inter-token-latency 5ms >/dev/null
    echo "$port" >"$LLMD_CLUSTER_DIR/sim-$member.port"
  fi
  endpoints+=("127.0.0.1:$port=${member%-*}")
done
for member in prefill-0 prefill-1 decode-0 decode-1; do
  port="$(cat "$LLMD_CLUSTER_DIR/sim-$member.port")"
  until curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; do
    kill -0 "$(cat "$LLMD_CLUSTER_DIR/pids/sim-$member.pid")" 2>/dev/null \
      || { tail -5 "$LLMD_CLUSTER_DIR/logs/sim-$member.log"; exit 1; }
    sleep 0.2
  done
done
kubectl get cm llama-pd-epp-config -n "$NS" -o jsonpath='{.data.config\.yaml}' >"$LLMD_CLUSTER_DIR/epp-config.yaml"
epp_pidfile="$LLMD_CLUSTER_DIR/pids/llmd-epp.pid"
if [[ -f "$epp_pidfile" ]] && kill -0 "$(cat "$epp_pidfile")" 2>/dev/null; then
  proxy_port="$(cat "$LLMD_CLUSTER_DIR/epp-proxy-port")"
else
  proxy_port="$(free_port)"; epp_metrics_port="$(free_port)"
  "$HACK/spawn.sh" llmd-epp "$EPP" --static-endpoints "$(IFS=,; echo "${endpoints[*]}")" \
    --config-file "$LLMD_CLUSTER_DIR/epp-config.yaml" \
    --proxy-addr "127.0.0.1:$proxy_port" --grpc-addr "127.0.0.1:$(free_port)" \
    --grpc-health-addr "127.0.0.1:$(free_port)" --metrics-addr "127.0.0.1:$epp_metrics_port" >/dev/null
  echo "$proxy_port" >"$LLMD_CLUSTER_DIR/epp-proxy-port"
  echo "$epp_metrics_port" >"$LLMD_CLUSTER_DIR/epp-metrics-port"
fi
until curl -fsS "http://127.0.0.1:$proxy_port/v1/models" >/dev/null 2>&1; do
  kill -0 "$(cat "$epp_pidfile")" 2>/dev/null || { cat "$LLMD_CLUSTER_DIR/logs/llmd-epp.log"; exit 1; }
  sleep 0.2
done
echo "llmd-epp proxy on http://127.0.0.1:$proxy_port routing to ${endpoints[*]}"

ask() {
  local prompt="$1"
  curl -sS -D "$LLMD_CLUSTER_DIR/last-headers" "http://127.0.0.1:$proxy_port/v1/chat/completions" \
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
curl -fsS "http://127.0.0.1:$(cat "$LLMD_CLUSTER_DIR/epp-metrics-port")/metrics" | grep '^llmd_epp_pd_decisions' | sed 's/^/   /'

cat <<MSG

The demo is running. Explore it:
  export KUBECONFIG=$KUBECONFIG
  export PATH=$LLMD_BIN_DIR:\$PATH
  kubectl describe llmd llama-pd -n $NS
  kubectl get cm llama-pd-epp-config -n $NS -o jsonpath='{.data.config\.yaml}'
  kubectl patch llmd llama-pd -n $NS --type merge -p '{"spec":{"decode":{"replicas":2}}}'
  kubectl apply -n $NS -f config/samples/      # all three samples fit on the 4 GPU nodes
  tail -f $LLMD_CLUSTER_DIR/logs/llmd-operator.log
  curl -s http://127.0.0.1:$proxy_port/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"$MODEL","messages":[{"role":"user","content":"hi"}]}'

Tear everything down (control plane, operator, simulators, llmd-epp):
  make cluster-down
MSG
