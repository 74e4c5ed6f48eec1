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

cat <<MSG

The demo is running. Explore it:
  export KUBECONFIG=$KUBECONFIG
  export PATH=$LLMD_BIN_DIR:\$PATH
  kubectl describe llmd llama-pd -n $NS
  kubectl get cm llama-pd-epp-config -n $NS -o jsonpath='{.data.config\.yaml}'
  kubectl patch llmd llama-pd -n $NS --type merge -p '{"spec":{"decode":{"replicas":2}}}'
  kubectl apply -n $NS -f config/samples/      # all three samples fit on the 4 GPU nodes
  tail -f $LLMD_CLUSTER_DIR/logs/llmd-operator.log

Tear everything down (control plane, operator):
  make cluster-down
MSG
