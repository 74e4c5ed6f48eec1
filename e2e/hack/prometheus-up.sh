#!/usr/bin/env bash
# prometheus-up.sh: a real Prometheus server for the local cluster in $LLMD_CLUSTER_DIR,
# configured as a user's would be from the chart: the chart is rendered with its
# PodMonitors, ServiceMonitor and PrometheusRule on, and manifests/hack/
# prometheus_config.py translates them as prometheus-operator does (Kubernetes service
# discovery against the local apiserver: pods for the EndpointPickers, engines and
# routing sidecars, EndpointSlices for the operator's metrics Service). promtool
# checks the configuration and the rules before the server starts.
#
# The server listens on 127.0.0.1 (a free port), keeps its data in the cluster's state
# and is registered like every other process there: cluster-down stops it. When it
# already runs it is reloaded if the configuration changed (another release
# namespace, an edited chart). Prints `LLMD_PROMETHEUS_URL=http://...` last.
#
# Env: LLMD_PROMETHEUS_RELEASE            the chart's release name (default llmd-operator)
#      LLMD_PROMETHEUS_RELEASE_NAMESPACE  its namespace (default llmd-system)
#      LLMD_PROMETHEUS_SCRAPE_INTERVAL    scrape and rule evaluation interval (default 5s)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RELEASE="${LLMD_PROMETHEUS_RELEASE:-llmd-operator}"
RELEASE_NS="${LLMD_PROMETHEUS_RELEASE_NAMESPACE:-llmd-system}"
INTERVAL="${LLMD_PROMETHEUS_SCRAPE_INTERVAL:-5s}"
PYTHON="${PYTHON:-python3}"

[[ -d "$LLMD_CLUSTER_DIR/pids" ]] || die "no cluster in $LLMD_CLUSTER_DIR (run cluster-up.sh)"
STATE="$(llmd_state_dir)"
# shellcheck disable=SC1091
source "$STATE/env"
DIR="$STATE/prometheus"
URL_FILE="$DIR/url"

PROM_BIN="$("$LLMD_HACK_DIR/build-prometheus.sh" | tail -1)"
mkdir -p "$DIR/data" "$DIR/next"
"$LLMD_BIN_DIR/helm" template "$RELEASE" "$LLMD_REPO_DIR/manifests/charts/llmd-operator" \
  --namespace "$RELEASE_NS" \
  --set podMonitors.enabled=true,serviceMonitor.enabled=true,prometheusRule.enabled=true \
  >"$DIR/next/rendered.yaml"
PYTHONDONTWRITEBYTECODE=1 "$PYTHON" "$LLMD_REPO_DIR/manifests/hack/prometheus_config.py" \
  --rendered "$DIR/next/rendered.yaml" --out "$DIR/next" --kubeconfig "$KUBECONFIG" \
  --scrape-interval "$INTERVAL"
"$PROM_BIN/promtool" check config --syntax-only "$DIR/next/prometheus.yml" >&2
"$PROM_BIN/promtool" check rules "$DIR/next/rules.yml" >&2
unchanged() { cmp -s "$DIR/next/$1" "$DIR/$1"; }
if pid_alive "$STATE/pids/prometheus.pid" && [[ -f "$URL_FILE" ]]; then
  url="$(cat "$URL_FILE")"
  if ! unchanged prometheus.yml || ! unchanged rules.yml; then
    cp "$DIR/next/prometheus.yml" "$DIR/next/rules.yml" "$DIR/"
    curl -fsS --noproxy '*' -X POST "$url/-/reload" >/dev/null \
      || die "Prometheus at $url did not reload $DIR/prometheus.yml"
    log "Prometheus at $url reloaded (release $RELEASE in $RELEASE_NS)"
  fi
  echo "LLMD_PROMETHEUS_URL=$url"
  exit 0
fi
cp "$DIR/next/prometheus.yml" "$DIR/next/rules.yml" "$DIR/"

port="$(free_port)"
url="http://127.0.0.1:$port"
"$LLMD_HACK_DIR/spawn.sh" prometheus "$PROM_BIN/prometheus" \
  --config.file="$DIR/prometheus.yml" \
  --storage.tsdb.path="$DIR/data" \
  --web.listen-address="127.0.0.1:$port" \
  --web.enable-lifecycle >/dev/null
ready() { curl -fsS --noproxy '*' "$url/-/ready"; }
wait_until 60 "Prometheus at $url to be ready" ready \
  || die "Prometheus did not start; its log: $STATE/logs/prometheus.log"
echo "$url" >"$URL_FILE"
log "Prometheus $("$PROM_BIN/prometheus" --version 2>&1 | sed -n '1s/.*version \([^ ]*\).*/\1/p') at $url"
echo "LLMD_PROMETHEUS_URL=$url"
