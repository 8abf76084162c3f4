#!/usr/bin/env bash
# Make `python3 -m uv` work: install uv from PyPI with pip when it is missing (no curl|sh, no network but PyPI).
set -euo pipefail
PY=${PYTHON:-python3}
if ! "$PY" -m uv --version >/dev/null 2>&1; then
  echo "uv not found: installing it with pip" >&2
  "$PY" -m pip install --quiet uv 2>/dev/null || "$PY" -m pip install --quiet --user uv
fi
"$PY" -m uv --version >&2
