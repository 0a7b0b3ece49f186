"""Issue 2.9: a device has numpy, OpenCV and one runtime; importing edge_yolo, the runtime and
running a Detector / `edge-yolo predict` must work with torch, nncf, openvino and onnx absent."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import runtime_models as rm

from edge_yolo import Detector

# Installed into sys.meta_path first: any import of these packages fails as on a device.
BLOCKER = textwrap.dedent(
    """
    import sys
    BLOCKED = ("torch", "torchvision", "nncf", "openvino", "onnx", "onnxscript", "onnxslim",
               "litert_torch", "ai_edge_quantizer", "jax")

    class _DeviceInstall:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(
                    f"No module named {name!r} (not installed on this device)", name=name
                )
            return None

    sys.meta_path.insert(0, _DeviceInstall())
    """
)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory):
    return rm.exported_bundle(rm.cache_root(tmp_path_factory), "onnx", "fp32")


def test_blocker_really_blocks():
    proc = _run("import torch")
    assert proc.returncode != 0 and "not installed on this device" in proc.stderr
    assert "ModuleNotFoundError" in proc.stderr  # what a missing package really raises


def test_import_and_detect_without_torch(onnx_bundle, raccoon_images):
    proc = _run(
        f"""
        import json, sys
        import edge_yolo
        import edge_yolo.runtime
        from edge_yolo import Detector
        det = Detector({str(onnx_bundle)!r}, threads=1, conf=0.1)
        out = [det(p).to_dict() for p in {[str(p) for p in raccoon_images]!r}]
        heavy = sorted(m for m in sys.modules
                       if m.split(".")[0] in ("torch", "nncf", "openvino", "onnx"))
        print(json.dumps({{"heavy": heavy, "dets": out}}))
        """
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    # Same detections as in this (torch-enabled) process.
    here = Detector(onnx_bundle, threads=1, conf=0.1)
    for p, got in zip(raccoon_images, result["dets"]):
        want = here(p).to_dict()["detections"]
        assert len(want) == len(got["detections"]) > 0
        for a, b in zip(want, got["detections"]):
            assert a["xyxy"] == pytest.approx(b["xyxy"], abs=0.02)


def test_cli_without_torch(onnx_bundle, raccoon_images, tmp_path):
    proc = _run(
        """
        from edge_yolo.cli import main
        main(["--help"])
        """
    )
    assert "predict" in proc.stdout  # device-safe subcommands are listed
    proc = _run(
        f"""
        import sys
        from edge_yolo.cli import main
        sys.exit(main(["predict", {str(onnx_bundle)!r}, {str(raccoon_images[0])!r},
                       "--out", {str(tmp_path)!r}, "--threads", "1"]))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{raccoon_images[0]}: 1 raccoon" in proc.stdout
    assert (tmp_path / raccoon_images[0].name).is_file()


def test_host_only_command_says_what_is_missing():
    proc = _run(
        """
        import sys
        from edge_yolo.cli import main
        sys.exit(main(["info"]))
        """
    )
    assert proc.returncode == 2
    assert "needs the 'torch' package" in proc.stderr
