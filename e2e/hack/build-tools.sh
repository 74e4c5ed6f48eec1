#!/usr/bin/env bash
# Build the e2e toolchain (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, etcd, kwok, helm, llm-d-inference-sim) from the pinned Go wrapper
# modules in e2e/toolchain/ into a versioned cache directory:
#
#   ${LLMD_CACHE:-$HOME/.cache/llmd-operator}/bin/<version-key>/
#
# <version-key> is derived from the pinned versions plus a hash of the wrapper
# go.mod/go.sum files and this script's build recipe, so changing a pin gives a new
# directory. Binaries are built into a temporary directory that is renamed into
# place only after everything built; the `.stamp` file is written last. A directory
# without a stamp is treated as a failed build and rebuilt.
#
# Usage:
#   build-tools.sh                  build if needed, print the bin dir on the last line
#   build-tools.sh --print-bin-dir  print the bin dir (no build, no output otherwise)
#   build-tools.sh --check          exit 0 if the tools are already built, 1 otherwise
#
# Env: LLMD_CACHE (cache root), GO (go binary, default `go`),
#      BUILD_NICE (nice level, default 10), BUILD_P (go build -p, default 2).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLCHAIN="$(cd "$HERE/../toolchain" && pwd)"
CACHE="${LLMD_CACHE:-$HOME/.cache/llmd-operator}"
GO="${GO:-go}"
BUILD_NICE="${BUILD_NICE:-10}"
BUILD_P="${BUILD_P:-2}"
# Bump when the build recipe below changes in a way that changes the binaries.
RECIPE=2

# modver <module dir> <module path>: the version required in a wrapper go.mod
# (plain text parse, so the warm path does not need to start the go command).
modver() {
  awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $2 == m && $3 ~ /^v/ { print $3; exit }' \
    "$TOOLCHAIN/$1/go.mod"
}

K8S_VERSION="$(modver kubernetes k8s.io/kubernetes)"
ETCD_VERSION="$(modver etcd go.etcd.io/etcd/server/v3)"
KWOK_VERSION="$(modver kwok sigs.k8s.io/kwok)"
HELM_VERSION="$(modver helm helm.sh/helm/v3)"
SIM_VERSION="$(modver inference-sim github.com/llm-d/llm-d-inference-sim)"
for v in K8S_VERSION ETCD_VERSION KWOK_VERSION HELM_VERSION SIM_VERSION; do
  [[ -n "${!v}" ]] || { echo "build-tools: cannot read $v from e2e/toolchain/*/go.mod" >&2; exit 1; }
done

HASH="$( { echo "recipe=$RECIPE"; cat "$TOOLCHAIN"/*/go.mod "$TOOLCHAIN"/*/go.sum; } | sha256sum | cut -c1-12)"
KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}_sim-${SIM_VERSION}_${HASH}"
BIN_ROOT="$CACHE/bin"
BIN_DIR="$BIN_ROOT/$KEY"
STAMP="$BIN_DIR/.stamp"
TOOLS=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok helm llm-d-inference-sim)

is_built() {
  [[ -f "$STAMP" ]] || return 1
  local t
  for t in "${TOOLS[@]}"; do [[ -x "$BIN_DIR/$t" ]] || return 1; done
  [[ -d "$BIN_DIR/kwok-stages" ]]
}

case "${1:-}" in
  --print-bin-dir) echo "$BIN_DIR"; exit 0 ;;
  --check) is_built; exit $? ;;
  --print-versions)
    printf 'kubernetes %s\netcd %s\nkwok %s\nhelm %s\nllm-d-inference-sim %s\n' \
      "$K8S_VERSION" "$ETCD_VERSION" "$KWOK_VERSION" "$HELM_VERSION" "$SIM_VERSION"
    exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--print-bin-dir|--check|--print-versions]" >&2; exit 2 ;;
esac

if is_built; then
  echo "build-tools: tools are cached in $BIN_DIR"
  echo "$BIN_DIR"
  exit 0
fi

mkdir -p "$BIN_ROOT"
# Serialize concurrent builds of the same cache (e.g. two `make tools`).
exec 9>"$BIN_ROOT/.lock"
if ! flock -n 9; then
  echo "build-tools: another build holds $BIN_ROOT/.lock; waiting..."
  flock 9
fi
if is_built; then
  echo "build-tools: tools are cached in $BIN_DIR (built by a concurrent run)"
  echo "$BIN_DIR"
  exit 0
fi
# Temp dirs left by an interrupted build (we hold the lock, so none is in use).
rm -rf "$BIN_ROOT"/.tmp-*
# A directory without a complete stamp is a failed/partial build: start over.
[[ -e "$BIN_DIR" ]] && { echo "build-tools: removing incomplete $BIN_DIR"; rm -rf "$BIN_DIR"; }

TMP="$(mktemp -d "$BIN_ROOT/.tmp-$KEY.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly"
start_all=$SECONDS

build() { # build <module dir> <output name> <package> [ldflags]
  local dir="$1" out="$2" pkg="$3" ldflags="${4:-}" t0=$SECONDS
  echo "build-tools: building $out ($pkg)"
  (cd "$TOOLCHAIN/$dir" && nice -n "$BUILD_NICE" "$GO" build -p "$BUILD_P" -trimpath \
    -ldflags "-s -w $ldflags" -o "$TMP/$out" "$pkg")
  echo "build-tools:   $out done in $((SECONDS - t0))s"
}

# Kubernetes: stamp the version or /version and `kubectl version` say v0.0.0.
kmaj="${K8S_VERSION#v}"; kmaj="${kmaj%%.*}"
kmin="${K8S_VERSION#v*.}"; kmin="${kmin%%.*}"
kdate="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' \
  "$("$GO" env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.info" 2>/dev/null || true)"
kdate="${kdate:-1970-01-01T00:00:00Z}"
KLD=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  KLD+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$kmaj -X $p.gitMinor=$kmin"
  KLD+=" -X $p.gitTreeState=clean -X $p.buildDate=$kdate"
done

# Make sure all modules are in the module cache (fast no-op when warm).
for d in kubernetes etcd kwok helm inference-sim; do
  (cd "$TOOLCHAIN/$d" && "$GO" mod download)
done

for t in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  build kubernetes "$t" "k8s.io/kubernetes/cmd/$t" "$KLD"
done
build etcd etcd go.etcd.io/etcd/server/v3
build kwok kwok sigs.k8s.io/kwok/cmd/kwok
build helm helm helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
build inference-sim llm-d-inference-sim github.com/llm-d/llm-d-inference-sim/cmd/llm-d-inference-sim

# kwok >= v0.8 has no built-in default stages: ship the upstream stage files of the
# pinned version next to the binary (passed to kwok with -c by cluster-up.sh).
KWOK_DIR="$(cd "$TOOLCHAIN/kwok" && "$GO" list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
mkdir -p "$TMP/kwok-stages"
for s in node/fast node/heartbeat-with-lease pod/fast; do
  for f in "$KWOK_DIR/kustomize/stage/$s"/*.yaml; do
    [[ "$(basename "$f")" == kustomization.yaml ]] && continue
    cp "$f" "$TMP/kwok-stages/$(echo "$s" | tr / -)-$(basename "$f")"
  done
done
chmod -R u+w "$TMP/kwok-stages"

printf 'kubernetes %s\netcd %s\nkwok %s\nhelm %s\nllm-d-inference-sim %s\n' \
  "$K8S_VERSION" "$ETCD_VERSION" "$KWOK_VERSION" "$HELM_VERSION" "$SIM_VERSION" > "$TMP/VERSIONS"
date -u +%Y-%m-%dT%H:%M:%SZ > "$TMP/.stamp"   # written last
chmod 755 "$TMP"
mv -T "$TMP" "$BIN_DIR"
trap - EXIT
echo "build-tools: built all tools in $((SECONDS - start_all))s into $BIN_DIR"
echo "$BIN_DIR"
