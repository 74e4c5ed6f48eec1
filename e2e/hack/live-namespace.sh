#!/usr/bin/env bash
# live-namespace.sh <namespace>
# Create the namespace (or take an existing one) and opt it in to the live nodes:
# the API server's PodNodeSelector and PodTolerationRestriction admission plugins
# then give every pod created in it the node selector llmd.dev/live=true and a
# toleration of the live nodes' taint, so its pods run as real processes under
# llmd-pod-runner and no other pod does. Pods that exist already are not moved.
#
# Uses KUBECONFIG (default: the cluster in $LLMD_CLUSTER_DIR) and kubectl from
# LLMD_BIN_DIR (default: build-tools.sh --print-bin-dir).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
(($# == 1)) || { echo "usage: $0 <namespace>" >&2; exit 2; }
ns="$1"
export KUBECONFIG="${KUBECONFIG:-$LLMD_CLUSTER_DIR/kubeconfig}"
KUBECTL="${LLMD_BIN_DIR:-$("$LLMD_HACK_DIR/build-tools.sh" --print-bin-dir)}/kubectl"
[[ -n "$("$KUBECTL" get nodes -l llmd.dev/live=true -o name)" ]] \
  || die "the cluster has no live nodes (started with LLMD_LIVE_NODES=0?): nothing would run this namespace's pods"
"$KUBECTL" get namespace "$ns" >/dev/null 2>&1 || "$KUBECTL" create namespace "$ns" >/dev/null
"$KUBECTL" annotate namespace "$ns" --overwrite \
  'scheduler.alpha.kubernetes.io/node-selector=llmd.dev/live=true' \
  'scheduler.alpha.kubernetes.io/defaultTolerations=[{"key":"llmd.dev/live","operator":"Exists","effect":"NoSchedule"}]' >/dev/null
log "namespace $ns runs its pods on live nodes"
