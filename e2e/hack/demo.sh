#!/usr/bin/env bash
# demo.sh: the README's main job, done the way a user would on a real cluster.
#
#   1. the local control plane with live GPU nodes (llmd-pod-runner runs their pods
#      as real processes at their own pod IPs; needs root);
#   2. the operator installed from the Helm chart into llmd-system (its pod runs
#      llmd-operator with the chart's ServiceAccount and RBAC);
#   3. the P/D sample (config/samples/llmd_v1alpha1_pd_nixl.yaml) with autoTune on;
#   4. once Ready, completions sent to the EndpointPicker pod: which pod served each,
#      and for the long one, which prefill pod computed its KV cache.
#
# Everything stays up; `make cluster-down` stops it all. Binaries come from
# LLMD_POD_RUNNER_BIN / LLMD_EPP_BIN / LLMD_OPERATOR_BIN (the Makefile builds them).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT="$(cd "$LLMD_HACK_DIR/../.." && pwd)"
SYSTEM_NS="${LLMD_DEMO_SYSTEM_NAMESPACE:-llmd-system}"
NS="${LLMD_DEMO_NAMESPACE:-llmd-demo}"
NAME=llama-pd
MODEL="meta-llama/Llama-3.1-8B-Instruct"
started=$SECONDS

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "local control plane"
if [[ "${LLMD_LIVE_NODES:-}" == 0 || "$(id -u)" != 0 ]]; then
  die "make demo runs the pods on live nodes, which need root (a network namespace per pod); run it as root"
fi
export LLMD_LIVE_NODES=1
eval "$("$LLMD_HACK_DIR/cluster-up.sh")"
# shellcheck disable=SC1091
source "$LLMD_CLUSTER_DIR/env"
export PATH="$LLMD_BIN_DIR:$PATH"
kubectl get nodes -L nvidia.com/gpu.product,llmd.dev/live

say "operator, from the Helm chart (namespace $SYSTEM_NS)"
"$LLMD_HACK_DIR/live-namespace.sh" "$SYSTEM_NS"
helm upgrade --install llmd-operator "$ROOT/manifests/charts/llmd-operator" \
  --namespace "$SYSTEM_NS" --wait --timeout 120s >/dev/null
kubectl get pods -n "$SYSTEM_NS" -o wide

say "LLMDeployment $NAME: the P/D sample with autoTune on (namespace $NS)"
"$LLMD_HACK_DIR/live-namespace.sh" "$NS"
kubectl apply -n "$NS" -f "$ROOT/config/samples/llmd_v1alpha1_pd_nixl.yaml" --dry-run=client -o json \
  | python3 -c 'import json, sys
d = json.load(sys.stdin)
d["spec"]["router"]["autoTune"] = {"enabled": True, "interval": "10s"}
json.dump(d, sys.stdout)' \
  | kubectl apply -n "$NS" -f -
kubectl wait -n "$NS" --for=condition=Ready "llmd/$NAME" --timeout=180s
kubectl get llmd -n "$NS" -o wide

say "Prometheus: the chart's monitors and alert rules on a real server"
prometheus="$(LLMD_PROMETHEUS_RELEASE_NAMESPACE="$SYSTEM_NS" "$LLMD_HACK_DIR/prometheus-up.sh")" \
  || die "Prometheus did not start"
export "${prometheus##*$'\n'}"
echo "  $LLMD_PROMETHEUS_URL scrapes the operator, the EndpointPicker, the engines and the sidecars"
# prom_query <promql>: the result rows, one per line ("labels => value").
prom_query() {
  curl -fsS --noproxy '*' "$LLMD_PROMETHEUS_URL/api/v1/query" --data-urlencode "query=$1" \
    | python3 -c 'import json, sys
for r in json.load(sys.stdin)["data"]["result"]:
    labels = ", ".join(f"{k}={v}" for k, v in sorted(r["metric"].items()))
    value = r["value"][1]
    print(f"    {{{labels}}} => {value}")'
}
# Requests start once the EndpointPicker has been scraped, so their rates show.
epp_scraped() { [[ -n "$(prom_query "up{namespace=\"$NS\", llmd_component=\"endpoint-picker\"} == 1")" ]]; }
wait_until 60 "Prometheus to scrape the EndpointPicker" epp_scraped \
  || die "Prometheus at $LLMD_PROMETHEUS_URL does not scrape the EndpointPicker; see $LLMD_PROMETHEUS_URL/api/v1/targets"

say "the pods: real processes on live nodes"
kubectl get pods -n "$NS" -o wide -L llm-d.ai/role
EPP_IP="$(kubectl get pods -n "$NS" \
  -l "app.kubernetes.io/instance=$NAME,app.kubernetes.io/component=endpoint-picker" \
  -o jsonpath='{.items[0].status.podIP}')"
[[ -n "$EPP_IP" ]] || die "no EndpointPicker pod IP"
PROXY="http://$EPP_IP:8080"
models_listed() { curl -fsS --noproxy '*' "$PROXY/v1/models"; }
wait_until 60 "the EndpointPicker pod to list the model" models_listed \
  || die "the EndpointPicker pod at $PROXY does not answer"

# pod_at <ip:port>: the name of the pod with that IP.
pod_at() {
  kubectl get pods -n "$NS" -o jsonpath="{range .items[?(@.status.podIP==\"${1%:*}\")]}{.metadata.name}{end}"
}

# ask <label> <prompt>: one chat completion through the EPP pod.
ask() {
  local headers="$LLMD_CLUSTER_DIR/demo-headers" body served prefill
  body="$(curl -fsS --noproxy '*' -D "$headers" "$PROXY/v1/chat/completions" \
    -H 'content-type: application/json' \
    -d "{\"model\":\"$MODEL\",\"max_tokens\":12,\"messages\":[{\"role\":\"user\",\"content\":\"$2\"}]}")"
  served="$(sed -n 's/^x-inference-pod: *//Ip' "$headers" | tr -d '\r')"
  prefill="$(sed -n 's/^x-prefiller-host-port: *//Ip' "$headers" | tr -d '\r')"
  printf '  %-28s served by %-20s' "$1" "$served"
  [[ -n "$prefill" ]] && printf ' prefilled by %s (%s)' "$(pod_at "$prefill")" "$prefill"
  printf '\n    answer: %s\n' "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["choices"][0]["message"]["content"])' "$body")"
}

say "the KV fabric, proven by a real NIXL transfer between a prefill and a decode node"
echo "  $(kubectl get llmd "$NAME" -n "$NS" -o jsonpath='{.status.conditions[?(@.type=="KVTransferReady")].message}')"

say "requests through the EndpointPicker pod ($PROXY)"
ask "short question 1" "What is the capital of France?"
echo "  (time to the first answer: $((SECONDS - started)) s)"
ask "short question 2" "Name three prime numbers."
ask "short question 3" "How far is the Moon?"
long="$(python3 -c 'print(" ".join(f"clause {i} of the master services agreement between the parties" for i in range(60)))')"
ask "long uncached prompt" "$long. Summarise the agreement."
echo "  the EndpointPicker's P/D decisions:"
curl -fsS --noproxy '*' "http://$EPP_IP:9090/metrics" | grep '^llmd_epp_pd_decisions' | sed 's/^/    /'

# As a Gateway does after the EndpointPicker's ext-proc answer: the request goes to
# the decode pod named, with the prefill pod named; its routing sidecar runs the legs.
DECODE_IP="$(kubectl get pods -n "$NS" -l "app.kubernetes.io/instance=$NAME,llm-d.ai/role=decode" \
  -o jsonpath='{.items[0].status.podIP}')"
PREFILL_IP="$(kubectl get pods -n "$NS" -l "app.kubernetes.io/instance=$NAME,llm-d.ai/role=prefill" \
  -o jsonpath='{.items[0].status.podIP}')"
say "as a Gateway: to the decode pod's routing sidecar ($DECODE_IP:8000), prefill on $PREFILL_IP:8000"
gateway_headers="$LLMD_CLUSTER_DIR/demo-gateway-headers"
curl -fsS --noproxy '*' -o /dev/null -D "$gateway_headers" "http://$DECODE_IP:8000/v1/chat/completions" \
  -H 'content-type: application/json' -H "x-prefiller-host-port: $PREFILL_IP:8000" \
  -d "{\"model\":\"$MODEL\",\"max_tokens\":8,\"messages\":[{\"role\":\"user\",\"content\":\"$long\"}]}"
printf '  served by %s; both legs carried request id %s\n' \
  "$(sed -n 's/^x-inference-pod: *//Ip' "$gateway_headers" | tr -d '\r')" \
  "$(sed -n 's/^x-llmd-pd-request-id: *//Ip' "$gateway_headers" | tr -d '\r')"
outside="$(curl -sS --noproxy '*' -o /dev/null -w '%{http_code}' "http://$DECODE_IP:8000/v1/chat/completions" \
  -H 'content-type: application/json' -H "x-prefiller-host-port: $EPP_IP:8080" \
  -d "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}")"
echo "  a prefiller outside the pool ($EPP_IP:8080): HTTP $outside, not contacted"

say "Prometheus ($LLMD_PROMETHEUS_URL): what it has scraped"
TARGETS_QUERY="sum by (job) (up{namespace=~\"$NS|$SYSTEM_NS\"})"
TTFT_QUERY="histogram_quantile(0.9, sum by (le) (rate(llmd_epp_time_to_first_token_seconds_bucket{namespace=\"$NS\"}[5m])))"
ttft_scraped() { [[ -n "$(prom_query "$TTFT_QUERY" | grep -v NaN)" ]]; }
wait_until 60 "Prometheus to scrape the requests' TTFT" ttft_scraped \
  || die "Prometheus at $LLMD_PROMETHEUS_URL has no TTFT of the requests; its targets: $LLMD_PROMETHEUS_URL/api/v1/targets"
# Every job with a healthy target: the operator (its Service's EndpointSlice), the
# EndpointPicker, the engines and the sidecars.
all_jobs_up() {
  [[ "$(prom_query "count(count by (job) (up{namespace=~\"$NS|$SYSTEM_NS\"} == 1))")" == *"=> 4" ]]
}
wait_until 60 "Prometheus to scrape every job" all_jobs_up \
  || die "Prometheus at $LLMD_PROMETHEUS_URL does not scrape every job; see $LLMD_PROMETHEUS_URL/api/v1/targets"
echo "  $TARGETS_QUERY"
prom_query "$TARGETS_QUERY"
echo "  $TTFT_QUERY"
prom_query "$TTFT_QUERY"

say "status.routing (the tuner's, every 10 s)"
tuned_from_pods() {
  [[ "$(kubectl get llmd "$NAME" -n "$NS" -o jsonpath='{.status.routing.reason}')" != *" 0 model server"* ]]
}
wait_until 30 "a tuning round with the pods' metrics" tuned_from_pods || true
kubectl get llmd "$NAME" -n "$NS" -o jsonpath='{.status.routing}' | python3 -m json.tool

cat <<MSG

The demo is up ($((SECONDS - started)) s). Use it as a user would:
  export KUBECONFIG=$KUBECONFIG PATH=$LLMD_BIN_DIR:\$PATH
  kubectl get llmd -n $NS
  kubectl describe llmd $NAME -n $NS
  curl -s $PROXY/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"$MODEL","messages":[{"role":"user","content":"hi"}]}'
  # with a TTFT objective: the answer says what the EPP predicted and what it saw
  curl -s -D - -o /dev/null $PROXY/v1/chat/completions -H 'content-type: application/json' \\
    -H 'x-llm-d-slo-ttft-ms: 500' -d '{"model":"$MODEL","messages":[{"role":"user","content":"hi"}]}' | grep -i ttft
  # as a Gateway: the decode pod's routing sidecar runs the prefill leg on the pod named
  curl -s -D - http://$DECODE_IP:8000/v1/chat/completions -H 'content-type: application/json' \\
    -H 'x-prefiller-host-port: $PREFILL_IP:8000' -d '{"model":"$MODEL","messages":[{"role":"user","content":"hi"}]}'
  kubectl patch llmd $NAME -n $NS --type merge -p '{"spec":{"decode":{"replicas":5}}}'
  kubectl delete pod $NAME-decode-0 -n $NS   # the runner stops it, the StatefulSet brings it back
  # Prometheus: the P90 time to first token through the EndpointPicker, last 5 minutes
  curl -s $LLMD_PROMETHEUS_URL/api/v1/query --data-urlencode 'query=$TTFT_QUERY'
Pod logs: $LLMD_POD_RUNNER_STATE/pods/<namespace>_<pod>_<uid>/<container>.log

Stop everything (control plane, operator, the pods' processes and network):
  make cluster-down
MSG
