#!/usr/bin/env bash
# nixl-venv.sh: the Python environment the local engine image's `python3` stands in
# for, with real NIXL (the fabric probe runs a NIXL transfer over UCX on it):
#
#   ${LLMD_CACHE:-$HOME/.cache/llmd-operator}/venv-nixl-<pins>/bin/python3
#
# From PyPI: nixl-cu12 (its own UCX and plugins; --no-deps, since the `nixl`
# meta-package pulls torch) and numpy, both pinned. About 340 MB, built once; a
# stamp marks a finished build. Prints the python path on the last line.
set -euo pipefail
NIXL_VERSION=1.5.1
NUMPY_VERSION=2.4.6
CACHE="${LLMD_CACHE:-$HOME/.cache/llmd-operator}"
VENV="$CACHE/venv-nixl-$NIXL_VERSION-numpy-$NUMPY_VERSION"
if [[ ! -f "$VENV/.stamp" ]]; then
  # A venv records its own path, so it is built where it lives; no stamp, no use.
  rm -rf "$VENV"
  echo "nixl-venv: installing nixl-cu12==$NIXL_VERSION and numpy==$NUMPY_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps \
    "nixl-cu12==$NIXL_VERSION" "numpy==$NUMPY_VERSION" >&2
  "$VENV/bin/python3" -c 'import nixl_cu12._api, numpy' >&2
  touch "$VENV/.stamp"
fi
echo "$VENV/bin/python3"
