"""The Raspberry Pi path on emulated ARM: the device install and the Detector on an arm64
Debian bookworm (Raspberry Pi OS's base, Python 3.11) run by qemu as a Cortex-A76 (Pi 5) and a
Cortex-A72 (Pi 4). ``scripts/emulated_pi.py`` builds it (``make test-pi`` runs just these).

What runs there: the built wheel's ``[tflite]`` install (ai-edge-litert's aarch64 wheel and
XNNPACK's ARM kernels), ``edge-yolo verify`` and ``predict``, and the fallback to
tflite-runtime 2.14. Results must agree with this x86 host by the same rules as the other
runtime comparisons: an ARM-only difference beyond them fails here. Correctness only:
emulation says nothing about speed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import pytest
import runtime_models as rm
from device_runs import assert_matches_host, run_device_script

pytestmark = pytest.mark.slow

SCRIPT = rm.REPO / "scripts" / "emulated_pi.py"
CPUS = ("a76", "a72")
PRECISIONS = ("fp32", "fp16", "int8")
DEVICE_ENV_LIMIT_MB = 330  # the [tflite] install on the device, target of the device-side issue


@pytest.fixture(scope="module")
def pi() -> dict:
    proc = subprocess.run([sys.executable, str(SCRIPT), "setup"], capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, f"emulated Pi setup failed:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def _command(cpu: str, env: str = "tflite", args: tuple[str, ...] = ()) -> tuple[list, dict]:
    """The qemu command line and environment of the script's ``run`` (its own function)."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import emulated_pi
    finally:
        sys.path.pop(0)
    return emulated_pi.command(cpu, env, list(args))


def _on_pi(cpu: str, *args: str, cwd=None, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd, environ = _command(cpu, "tflite", args)
    return subprocess.run(cmd, env=environ, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict:
    root = rm.cache_root(tmp_path_factory)
    return {p: rm.exported_bundle(root, "rpi", p) for p in PRECISIONS}


PROBE = """
import importlib.util, json, platform, sys
import numpy
from edge_yolo import Detector  # noqa: F401
print(json.dumps({
    "machine": platform.machine(),
    "python": platform.python_version(),
    "numpy": numpy.__version__,
    "edge_yolo": __import__("edge_yolo").__file__,
    "importable": {m: importlib.util.find_spec(m) is not None
                   for m in ("torch", "nncf", "onnx", "openvino", "litert_torch", "tensorflow",
                             "ai_edge_litert", "tflite_runtime")},
    "loaded": sorted(m for m in ("torch", "onnx", "openvino") if m in sys.modules),
}))
"""


@pytest.mark.parametrize("cpu", CPUS)
def test_the_tflite_install_runs_the_detector_without_torch(pi, cpu, tmp_path):
    proc = _on_pi(cpu, "-c", PROBE, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    probe = json.loads(proc.stdout)
    assert probe["machine"] == "aarch64" and probe["python"].startswith("3.11")
    assert probe["edge_yolo"].startswith(pi["envs"]["tflite"])  # the wheel, not the checkout
    assert probe["importable"]["ai_edge_litert"] and not probe["loaded"]
    heavy = [m for m in ("torch", "nncf", "onnx", "openvino", "litert_torch", "tensorflow")
             if probe["importable"][m]]
    assert heavy == []


def test_the_device_install_is_small(pi):
    assert pi["installed_mb"]["tflite"] <= DEVICE_ENV_LIMIT_MB, pi["installed_mb"]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("cpu", CPUS)
def test_verify_passes_on_the_pi(pi, bundles, cpu, precision, tmp_path):
    proc = _on_pi(cpu, "-m", "edge_yolo", "verify", str(bundles[precision]), "--threads", "2",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert proc.stdout.startswith(f"PASS {bundles[precision]}")


@pytest.fixture(scope="module", params=CPUS)
def arm_run(request, pi, bundles, tmp_path_factory) -> dict:
    cmd, env = _command(request.param)
    work = tmp_path_factory.mktemp(f"pi-{request.param}")
    return run_device_script(cmd, env, list(bundles.values()), work, timeout=1800)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_detections_on_arm_match_the_x86_host(arm_run, bundles, precision):
    assert arm_run["machine"] == "aarch64" and arm_run["loaded"] == ["ai_edge_litert"]
    assert arm_run["bundles"][str(bundles[precision])]["lone_file_same"]
    assert_matches_host(arm_run, bundles[precision])


def test_predict_on_a_video_writes_its_outputs(pi, bundles, tmp_path):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for photo in rm.raccoon_photos()[:4]:
        writer.write(cv2.resize(cv2.imread(str(photo)), (320, 240)))
    writer.release()
    out = tmp_path / "out"
    proc = _on_pi("a76", "-m", "edge_yolo", "predict", str(bundles["int8"]), str(video),
                  "--out", str(out), "--threads", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "clip.mp4: 4 frames" in proc.stdout
    records = json.loads((out / "predictions.json").read_text())
    assert sorted(records) == ["1", "2", "3", "4"]
    assert any(r["detections"] for r in records.values())
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4


def test_the_tflite_runtime_214_fallback_agrees_on_arm(pi, bundles, tmp_path):
    cmd, env = _command("a76", "tflite214")
    run = run_device_script(cmd, env, [bundles["fp32"], bundles["int8"]], tmp_path,
                            timeout=1800)
    assert run["machine"] == "aarch64" and run["numpy"].startswith("1.")
    assert run["loaded"] == ["tflite_runtime"]
    for precision in ("fp32", "int8"):
        assert run["bundles"][str(bundles[precision])]["runtime"] == "tflite_runtime"
        assert_matches_host(run, bundles[precision])
