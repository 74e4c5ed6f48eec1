#!/usr/bin/env bash
# with-cluster.sh <command> [args...]
# Start a private cluster, run the command with the cluster's environment exported
# (KUBECONFIG, LLMD_CLUSTER_DIR, LLMD_BIN_DIR, LLMD_*_PORT), then always tear the
# cluster down and return the command's exit status.
#
# LLMD_CLUSTER_DIR defaults to a fresh temporary directory here (not the shared dev
# cluster), so parallel runs do not interfere. LLMD_KEEP_CLUSTER=1 skips teardown.
set -euo pipefail
HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
(($#)) || { echo "usage: $0 <command> [args...]" >&2; exit 2; }
made_dir=0
if [[ -z "${LLMD_CLUSTER_DIR:-}" ]]; then
  LLMD_CLUSTER_DIR="$(mktemp -d "${TMPDIR:-/tmp}/llmd-e2e-cluster.XXXXXX")"
  made_dir=1
fi
export LLMD_CLUSTER_DIR
teardown() {
  local rc=$?
  if [[ "${LLMD_KEEP_CLUSTER:-}" == 1 ]]; then
    echo "keeping cluster in $LLMD_CLUSTER_DIR (run e2e/hack/cluster-down.sh with LLMD_CLUSTER_DIR set)" >&2
  else
    "$HACK/cluster-down.sh" || rc=1
    # The directory this script made (cluster-down empties a directory it did not).
    if ((made_dir)); then rmdir "$LLMD_CLUSTER_DIR" 2>/dev/null || true; fi
  fi
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM
"$HACK/cluster-up.sh" >/dev/null
# shellcheck disable=SC1091
source "$LLMD_CLUSTER_DIR/env"
set +e
"$@"
rc=$?
set -e
exit "$rc"
