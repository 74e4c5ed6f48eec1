#!/usr/bin/env bash
# Build operator-verify (github.com/operator-framework/api/cmd/operator-verify, the
# operator-framework's bundle validator) from the pinned wrapper module in
# manifests/toolchain/operator-verify into a versioned cache directory:
#
#   ${LLMD_CACHE:-$HOME/.cache/llmd-operator}/bin/operator-verify-<version>_<hash>/
#
# Same recipe as e2e/hack/build-tools.sh (CGO off, -mod=readonly, temp dir renamed
# into place, .stamp last), but its own key: the wrapper lives outside
# e2e/toolchain/ so that pinning it does not change the e2e toolchain's key.
#
# Usage: build-operator-verify.sh [--print-bin-dir]   (prints the bin dir last)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MOD="$(cd "$HERE/../toolchain/operator-verify" && pwd)"
CACHE="${LLMD_CACHE:-$HOME/.cache/llmd-operator}"
GO="${GO:-go}"
BUILD_NICE="${BUILD_NICE:-10}"
BUILD_P="${BUILD_P:-2}"

VERSION="$(awk '$1 == "github.com/operator-framework/api" && $2 ~ /^v/ { print $2; exit }' "$MOD/go.mod")"
[[ -n "$VERSION" ]] || { echo "build-operator-verify: no operator-framework/api version in go.mod" >&2; exit 1; }
HASH="$(cat "$MOD/go.mod" "$MOD/go.sum" | sha256sum | cut -c1-12)"
BIN_ROOT="$CACHE/bin"
BIN_DIR="$BIN_ROOT/operator-verify-${VERSION}_${HASH}"

if [[ "${1:-}" == --print-bin-dir ]]; then echo "$BIN_DIR"; exit 0; fi
if [[ -f "$BIN_DIR/.stamp" && -x "$BIN_DIR/operator-verify" ]]; then echo "$BIN_DIR"; exit 0; fi

mkdir -p "$BIN_ROOT"
exec 9>"$BIN_ROOT/.lock-operator-verify"
flock 9
if [[ -f "$BIN_DIR/.stamp" && -x "$BIN_DIR/operator-verify" ]]; then echo "$BIN_DIR"; exit 0; fi
rm -rf "$BIN_ROOT"/.tmp-operator-verify-* "$BIN_DIR"
TMP="$(mktemp -d "$BIN_ROOT/.tmp-operator-verify-XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

echo "build-operator-verify: building operator-verify $VERSION (a few minutes on 2 cores)" >&2
t0=$SECONDS
(cd "$MOD" && "$GO" mod download && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly" \
  nice -n "$BUILD_NICE" "$GO" build -p "$BUILD_P" -trimpath -ldflags "-s -w" \
  -o "$TMP/operator-verify" github.com/operator-framework/api/cmd/operator-verify) >&2
echo "build-operator-verify: done in $((SECONDS - t0))s" >&2
date -u +%Y-%m-%dT%H:%M:%SZ > "$TMP/.stamp"
chmod 755 "$TMP"
mv -T "$TMP" "$BIN_DIR"
trap - EXIT
echo "$BIN_DIR"
