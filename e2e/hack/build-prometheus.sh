#!/usr/bin/env bash
# Build the pinned Prometheus server and promtool from the Go wrapper module in
# e2e/toolchain/prometheus/ into their own versioned cache directory (apart from the
# control plane's, so a Prometheus bump does not rebuild Kubernetes):
#
#   ${LLMD_CACHE:-$HOME/.cache/llmd-operator}/bin/prometheus-<version>_<hash>/
#
# Only the Kubernetes service discovery is compiled in (Prometheus' own build tags
# remove_all_sd,enable_kubernetes_sd); the web UI's assets are not embedded, the HTTP
# API is complete. Same layout and rules as build-tools.sh: a temporary directory
# renamed into place, `.stamp` written last.
#
# Usage:
#   build-prometheus.sh                  build if needed, print the bin dir on the last line
#   build-prometheus.sh --print-bin-dir  print the bin dir (no build)
#   build-prometheus.sh --check          exit 0 if built, 1 otherwise
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODULE="$(cd "$HERE/../toolchain/prometheus" && pwd)"
CACHE="${LLMD_CACHE:-$HOME/.cache/llmd-operator}"
GO="${GO:-go}"
BUILD_NICE="${BUILD_NICE:-10}"
BUILD_P="${BUILD_P:-2}"
RECIPE=1
TAGS=remove_all_sd,enable_kubernetes_sd

VERSION="$(awk '$1 == "github.com/prometheus/prometheus" && $2 ~ /^v/ { print $2; exit }' "$MODULE/go.mod")"
[[ -n "$VERSION" ]] || { echo "build-prometheus: no prometheus version in $MODULE/go.mod" >&2; exit 1; }
HASH="$( { echo "recipe=$RECIPE tags=$TAGS"; cat "$MODULE/go.mod" "$MODULE/go.sum"; } | sha256sum | cut -c1-12)"
# Module v0.MMP.x is Prometheus M.MP.x (v0.316.0 is 3.16.0).
n="${VERSION#v0.}"; mm="${n%%.*}"
RELEASE="${mm:0:1}.$((10#${mm:1})).${n#*.}"
BIN_ROOT="$CACHE/bin"
BIN_DIR="$BIN_ROOT/prometheus-${VERSION}_$HASH"

is_built() { [[ -f "$BIN_DIR/.stamp" && -x "$BIN_DIR/prometheus" && -x "$BIN_DIR/promtool" ]]; }

case "${1:-}" in
  --print-bin-dir) echo "$BIN_DIR"; exit 0 ;;
  --check) is_built; exit $? ;;
  "") ;;
  *) echo "usage: $0 [--print-bin-dir|--check]" >&2; exit 2 ;;
esac

if is_built; then
  echo "build-prometheus: cached in $BIN_DIR"
  echo "$BIN_DIR"
  exit 0
fi
mkdir -p "$BIN_ROOT"
exec 9>"$BIN_ROOT/.lock-prometheus"
flock 9
if is_built; then echo "$BIN_DIR"; exit 0; fi
rm -rf "$BIN_ROOT"/.tmp-prometheus-*
rm -rf "$BIN_DIR"
TMP="$(mktemp -d "$BIN_ROOT/.tmp-prometheus-XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly"
(cd "$MODULE" && "$GO" mod download)
for tool in prometheus promtool; do
  t0=$SECONDS
  echo "build-prometheus: building $tool $RELEASE (module $VERSION)"
  (cd "$MODULE" && nice -n "$BUILD_NICE" "$GO" build -p "$BUILD_P" -trimpath -tags "$TAGS" \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$RELEASE" \
    -o "$TMP/$tool" "github.com/prometheus/prometheus/cmd/$tool")
  echo "build-prometheus:   $tool done in $((SECONDS - t0))s"
done
date -u +%Y-%m-%dT%H:%M:%SZ > "$TMP/.stamp"   # written last
mv "$TMP" "$BIN_DIR"
trap - EXIT
echo "$BIN_DIR"
