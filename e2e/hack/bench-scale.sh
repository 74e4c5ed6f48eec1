#!/usr/bin/env bash
# bench-scale.sh <llmd-bench-scale> [args...]: run by `make bench-scale` inside
# with-cluster.sh (fake GPU nodes only, the controller-manager's and scheduler's API
# rate limits raised). The CRD, an operator (release build) watching the
# benchmark's namespace, then the benchmark, which creates the deployments and
# measures.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
(($# >= 1)) || { echo "usage: $0 <llmd-bench-scale> [args...]" >&2; exit 2; }
BENCH="$1"; shift
NS="${LLMD_BENCH_NAMESPACE:-bench-scale}"
"$LLMD_BIN_DIR/kubectl" apply --server-side -f "$LLMD_REPO_DIR/crds/llmd.dev_llmdeployments.yaml" >/dev/null
established() {
  [[ "$("$LLMD_BIN_DIR/kubectl" get crd llmdeployments.llmd.dev \
    -o jsonpath='{.status.conditions[?(@.type=="Established")].status}')" == True ]]
}
wait_until 60 "the LLMDeployment CRD to be established" established || die "the CRD is not served"
"$LLMD_BIN_DIR/kubectl" create namespace "$NS" >/dev/null 2>&1 || true
METRICS_PORT="$(free_port)"
PID="$("$LLMD_HACK_DIR/spawn.sh" bench-scale-operator "$LLMD_OPERATOR_BIN" run --namespace "$NS" \
  --leader-election-namespace "$NS" --identity bench \
  --metrics-addr "127.0.0.1:$METRICS_PORT" --health-addr "127.0.0.1:$(free_port)")"
metrics_up() { curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" >/dev/null; }
wait_until 60 "the operator's metrics" metrics_up || die "the operator did not start (see $(llmd_state_dir)/logs/bench-scale-operator.log)"
"$BENCH" --namespace "$NS" --operator-pid "$PID" \
  --operator-metrics "http://127.0.0.1:$METRICS_PORT/metrics" "$@"
