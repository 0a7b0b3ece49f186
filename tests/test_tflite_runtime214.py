"""Exported ``.tflite`` files on tflite-runtime 2.14 (numpy 1.x, no torch, no ai-edge-litert):
the runtime many Raspberry Pi OS images still carry.

The environment is built by ``scripts/tflite214_env.sh`` on first use (``.venv-tflite214``,
about a minute of pip install). The FP32 and full-integer INT8 bundles are exported here, run
there through ``edge_yolo.Detector`` in a subprocess, and must give what ai-edge-litert gives.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import runtime_models as rm
from device_runs import assert_matches_host, run_device_script

pytestmark = pytest.mark.slow

VENV = rm.REPO / ".venv-tflite214"
SCRIPT = rm.REPO / "scripts" / "tflite214_env.sh"
NO_WHEEL = 3  # the script's exit status when tflite-runtime 2.14.0 has no wheel for this platform


@pytest.fixture(scope="module")
def python214() -> Path:
    proc = subprocess.run(
        ["bash", str(SCRIPT), str(VENV)],
        env={**os.environ, "PY": sys.executable},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode == NO_WHEEL:
        pytest.skip(f"tflite-runtime 2.14 cannot be installed here: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, f"{SCRIPT} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return VENV / "bin" / "python"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    root = rm.cache_root(tmp_path_factory)
    return {p: rm.exported_bundle(root, "rpi", p) for p in ("fp32", "int8")}


@pytest.fixture(scope="module")
def on_device(python214, bundles, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("tflite214")
    return run_device_script([str(python214)], None, list(bundles.values()), work)


def test_environment_is_the_old_runtime_only(on_device):
    assert on_device["numpy"].startswith("1.")
    assert on_device["loaded"] == ["tflite_runtime"]
    for run in on_device["bundles"].values():
        assert run["runtime"] == "tflite_runtime"
        assert run["lone_file_same"]  # embedded metadata read without ai-edge-litert's schema


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_tflite_runtime_214_matches_ai_edge_litert(on_device, bundles, precision):
    assert_matches_host(on_device, bundles[precision])
