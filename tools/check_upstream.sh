#!/usr/bin/env bash
# Run the test suite against another detectron2 build, e.g. upstream main:
#
#   git clone https://github.com/facebookresearch/detectron2 /tmp/d2   # any source tree
#   tools/check_upstream.sh /tmp/d2 [pytest args, default: -q tests]
#
# Sets up the main venv (setup.sh), then makes a separate venv ($TKD_UPSTREAM_VENV, default
# .venv-upstream) that sees the main venv's packages (torch, fvcore, pytest, ...) behind its
# own, builds the given detectron2 there without its C++ extension (no dependencies: the
# main venv has them), installs this project editable, and runs the tests with that Python.
# The main venv and its detectron2 are not touched.
set -euo pipefail
SRC=${1:?usage: tools/check_upstream.sh DETECTRON2_SOURCE_DIR [pytest args]}
SRC=$(cd "$SRC" && pwd)
shift
cd "$(dirname "$0")/.."
./setup.sh
VENV=${TKD_UPSTREAM_VENV:-.venv-upstream}
rm -rf "$VENV"
python3 -m venv "$VENV"
purelib='import sysconfig; print(sysconfig.get_paths()["purelib"])'
main_site=$(.venv/bin/python -c "$purelib")
own_site=$("$VENV/bin/python" -c "$purelib")
echo "$main_site" > "$own_site/zz_tkd_main_venv.pth"  # after the venv's own packages
"$VENV/bin/python" -m pip install --quiet --upgrade setuptools wheel  # to build detectron2
"$VENV/bin/python" tools/install_detectron2.py --source "$SRC"
"$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c "import tkd_d2, detectron2; from tkd_d2 import compat; \
print('[check_upstream] detectron2 from', detectron2.__file__); \
print('[check_upstream] shims applied:', compat.applied_shims)"
if [ $# -eq 0 ]; then set -- -q tests; fi
exec "$VENV/bin/python" -m pytest "$@"
