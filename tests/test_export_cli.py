"""``edge-yolo export`` as a user runs it: a subprocess that prints the bundle path and a
summary of what it made."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from export_helpers import textured_checkpoint  # noqa: E402

from edge_yolo.runtime.bundle import BundleMeta  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "edge_yolo", "export", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def test_export_onnx_prints_the_bundle_path(tmp_path):
    ckpt = textured_checkpoint(tmp_path / "best.pt", 64)
    r = _cli("--weights", str(ckpt), "--target", "onnx", "--imgsz", "64", "--out",
             str(tmp_path / "bundles"), "--threads", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    bundle = Path(lines[0])  # the path alone on the first line: scripts take it with head -1
    summary = "\n".join(lines[1:])
    assert "precision    fp32 (none; onnx default)" in summary
    assert "input size   64x64 (from --imgsz)" in summary
    assert "agreement    top class 100.0%" in summary and "MB), gelan-t for onnx" in summary
    assert r.stderr == ""  # no converter chatter or third-party warnings
    assert bundle == tmp_path / "bundles" / "gelan-t-onnx-fp32"
    meta = BundleMeta.read(bundle)
    assert (meta.target, meta.imgsz) == ("onnx", [64, 64])
    assert (bundle / "model.onnx").is_file() and (bundle / "reference.npz").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "onnx", "--precision", "int8"],
         "does not support precision 'int8'; supported: fp32"),
        (["--target", "coral"], "unknown export target 'coral'"),
        (["--target", "onnx", "--imgsz", "100"], "multiple of 32"),
        (["--target", "onnx", "--calibrate-method", "entropy"], "not an option of target 'onnx'"),
    ],
)
def test_refusals_exit_2_with_a_message(tmp_path, args, message):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"never read: the target and options are checked first")
    r = _cli("--weights", str(weights), *args, cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_missing_checkpoint_is_named(tmp_path):
    r = _cli("--weights", str(tmp_path / "none.pt"), "--target", "onnx", cwd=tmp_path)
    assert r.returncode == 2 and "none.pt: no such file or directory" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_help_lists_targets_and_boards(tmp_path):
    r = _cli("--help", cwd=tmp_path)
    assert r.returncode == 0
    for word in ("onnx", "intel", "jetson", "rpi", "rpi5", "jetson-orin-nx", "--calib"):
        assert word in r.stdout
