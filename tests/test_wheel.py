"""The built wheel: board profiles ship inside it, and the device extras pull no host stack."""

from __future__ import annotations

import email
import json
import os
import subprocess
import sys
import zipfile

import pytest
import runtime_models as rm

pytestmark = pytest.mark.slow

#: what must never reach a device install: the training and export stack
HOST_ONLY = {"torch", "nncf", "onnx", "onnxscript", "onnxslim", "litert-torch",
             "ai-edge-quantizer", "faster-coco-eval", "matplotlib", "tensorflow"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w",
                    str(dist), str(rm.REPO)], check=True, capture_output=True, timeout=600)
    (path,) = dist.glob("edge_yolo-*.whl")
    return path


def _requirements(wheel) -> dict[str, set[str]]:
    """Requires-Dist of the wheel by extra ("" = the base install), names only."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(z.read(name))
    out: dict[str, set[str]] = {}
    for req in meta.get_all("Requires-Dist") or []:
        spec, _, marker = req.partition(";")
        extra = marker.split("extra ==")[-1].strip().strip("'\"") if "extra ==" in marker else ""
        dist = spec.strip().split()[0]
        for sep in "<>=!~[":
            dist = dist.split(sep)[0]
        out.setdefault(extra, set()).add(dist.lower())
    return out


def test_device_extras_pull_no_host_stack(wheel):
    reqs = _requirements(wheel)
    assert "torch" in reqs["host"]  # the parsing finds what is there
    for extra in ("", "tflite", "openvino", "onnx"):
        assert not reqs.get(extra, set()) & HOST_ONLY, (extra, reqs.get(extra))
    assert reqs["tflite"] == {"ai-edge-litert"} and reqs["onnx"] == {"onnxruntime"}


def test_board_profiles_resolve_from_the_installed_wheel(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, timeout=600)
    probe = (
        "import json, edge_yolo\n"
        "from edge_yolo.export.targets import devices_dir, list_devices, resolve\n"
        "spec, precision, board = resolve('rpi5')\n"
        "print(json.dumps({'file': edge_yolo.__file__, 'dir': str(devices_dir()),"
        " 'boards': list_devices(), 'target': spec.name, 'precision': precision,"
        " 'install': board.install}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("EDGE_YOLO_DEVICES", None)
    proc = subprocess.run([sys.executable, "-P", "-c", probe], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)
    assert got["file"].startswith(str(site)) and got["dir"].startswith(str(site))
    assert {"rpi4", "rpi5", "jetson-orin-nano", "jetson-orin-nx", "intel-cpu"} <= set(
        got["boards"])
    assert (got["target"], got["precision"]) == ("rpi", "int8")
    assert "ai-edge-litert" in got["install"] or "edge-yolo[tflite]" in got["install"]
