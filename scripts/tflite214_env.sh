#!/usr/bin/env bash
# Build .venv-tflite214: the device-side runtime stack many Raspberry Pi OS images still carry
# (tflite-runtime 2.14, which needs numpy<2), with edge_yolo installed torch-free on top.
# Used by tests/test_tflite_runtime214.py to prove exported .tflite files run there.
#
#   scripts/tflite214_env.sh [VENV_DIR]      (default: .venv-tflite214 in the repo root)
#   PY=/path/to/python3.11 scripts/tflite214_env.sh
#
# Exit status 3 means the tflite-runtime 2.14.0 wheel does not exist for this platform/Python
# (it ships cp38-cp311 manylinux x86_64/aarch64 wheels only); anything else non-zero is a
# real failure.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-tflite214}"
PY="${PY:-python3}"
STAMP="$VENV/.installed"
if [[ -f "$STAMP" ]]; then
  exit 0
fi
rm -rf "$VENV"
"$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --quiet)
# Only the wheel lookup decides "not installable here"; network or resolver errors stay errors.
if ! "${PIP[@]}" download --no-deps --only-binary=:all: -d "$VENV/.wheels" tflite-runtime==2.14.0; then
  if "${PIP[@]}" index versions tflite-runtime >/dev/null 2>&1; then
    echo "tflite-runtime 2.14.0 has no wheel for $("$VENV/bin/python" -c 'import sys, platform; print(f"cp{sys.version_info[0]}{sys.version_info[1]} {platform.machine()}")')" >&2
    exit 3
  fi
  exit 1
fi
# numpy<2: tflite-runtime 2.14 was built against numpy 1.x; OpenCV 4.12+ requires numpy 2, so
# it is pinned below that. Headless OpenCV: the runtime path opens no windows.
"${PIP[@]}" install "$VENV"/.wheels/tflite_runtime-2.14.0-*.whl "numpy<2" \
  "opencv-python-headless<4.12" "pyyaml>=6"
# The package itself without its dependencies: no torch, no ai-edge-litert, so the Detector
# must fall back to tflite_runtime.
"${PIP[@]}" install --no-deps -e .
"$VENV/bin/python" - <<'PY'
import importlib.util, sys
import numpy, tflite_runtime.interpreter  # noqa: F401
import edge_yolo  # noqa: F401
for banned in ("torch", "ai_edge_litert"):
    if importlib.util.find_spec(banned) is not None:
        sys.exit(f"{banned} must not be importable in the tflite-runtime 2.14 environment")
print(f"tflite-runtime {tflite_runtime.__version__}, numpy {numpy.__version__}")
PY
touch "$STAMP"
