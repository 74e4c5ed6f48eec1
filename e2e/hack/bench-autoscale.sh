#!/usr/bin/env bash
# bench-autoscale.sh <llmd-bench-autoscale> [args...]: run by `make bench-autoscale`
# inside with-cluster.sh. The benchmark's namespace on live nodes, the CRD, an
# operator watching that namespace (a local process, as the e2e tests run it), then
# the benchmark, which applies each configuration in turn.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
(($# >= 1)) || { echo "usage: $0 <llmd-bench-autoscale> [args...]" >&2; exit 2; }
BENCH="$1"; shift
NS="${LLMD_BENCH_NAMESPACE:-bench-autoscale}"
[[ "$LLMD_LIVE_NODES" == 1 ]] || die "the benchmark runs pods on live nodes, which need root"
"$LLMD_HACK_DIR/live-namespace.sh" "$NS"
"$LLMD_BIN_DIR/kubectl" apply -f "$LLMD_REPO_DIR/crds/llmd.dev_llmdeployments.yaml" >/dev/null
# The operator exits when it cannot list LLMDeployments: start it once they are served.
established() {
  [[ "$("$LLMD_BIN_DIR/kubectl" get crd llmdeployments.llmd.dev \
    -o jsonpath='{.status.conditions[?(@.type=="Established")].status}')" == True ]]
}
wait_until 60 "the LLMDeployment CRD to be established" established || die "the CRD is not served"
"$LLMD_HACK_DIR/spawn.sh" bench-operator "$LLMD_OPERATOR_BIN" run --namespace "$NS" \
  --leader-election-namespace "$NS" --identity bench \
  --metrics-addr "127.0.0.1:$(free_port)" --health-addr "127.0.0.1:$(free_port)" >/dev/null
"$BENCH" --namespace "$NS" "$@"
