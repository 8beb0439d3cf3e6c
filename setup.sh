#!/usr/bin/env bash
# One-time (idempotent) setup: an isolated venv in ./.venv with torch, detectron2, the
# project's dependencies and the project itself (editable). Re-running is cheap.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=${TKD_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
if ! "$VPY" -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] installing torch + torchvision (large download on a machine without a local copy)"
  "$VPY" -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
fi
"$VPY" tools/install_detectron2.py
"$VPY" -m pip install --quiet --no-build-isolation -e ".[test]"
echo "[setup] ready: $VPY"
