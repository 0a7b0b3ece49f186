"""Exported ``.tflite`` files on tflite-runtime 2.14 (numpy 1.x, no torch, no ai-edge-litert):
the runtime many Raspberry Pi OS images still carry.

The environment is built by ``scripts/tflite214_env.sh`` on first use (``.venv-tflite214``,
about a minute of pip install). The FP32 and full-integer INT8 bundles are exported here, run
there through ``edge_yolo.Detector`` in a subprocess, and must give what ai-edge-litert gives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import runtime_models as rm

from edge_yolo import Detector
from edge_yolo.runtime import BundleMeta

pytestmark = pytest.mark.slow

VENV = rm.REPO / ".venv-tflite214"
SCRIPT = rm.REPO / "scripts" / "tflite214_env.sh"
NO_WHEEL = 3  # the script's exit status when tflite-runtime 2.14.0 has no wheel for this platform

# Runs inside .venv-tflite214: detections on the photos plus the raw outputs on the bundle's
# reference inputs, written as JSON. Also proves the fallback path imported nothing heavy.
DEVICE_SCRIPT = """
import json, os, shutil, sys, tempfile
import numpy as np
from edge_yolo import Detector

out_path, photos, bundles = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
result = {"numpy": np.__version__, "bundles": {}}
for bundle in bundles:
    det = Detector(bundle, threads=1, conf=0.25)
    refs = np.load(bundle + "/reference.npz")
    box, cls = det.backend.infer(refs["images"])
    # The lone model file, away from its edge_yolo.json: metadata read from inside the file.
    lone = os.path.join(tempfile.mkdtemp(), det.meta.model_file)
    shutil.copy(os.path.join(bundle, det.meta.model_file), lone)
    lone_box, _ = Detector(lone, threads=1).backend.infer(refs["images"])
    result["bundles"][bundle] = {
        "runtime": det.backend.runtime,
        "detections": [
            {"xyxy": d.xyxy.tolist(), "scores": d.scores.tolist(),
             "class_ids": d.class_ids.tolist()}
            for d in map(det, photos)
        ],
        "box_dist": box.tolist(),
        "lone_file_same": bool(np.array_equal(lone_box, box)),
        "cls_logits": cls.tolist(),
    }
result["loaded"] = sorted(
    m for m in ("torch", "ai_edge_litert", "tflite_runtime") if m in sys.modules
)
with open(out_path, "w") as f:
    json.dump(result, f)
"""


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
    script, out = work / "run.py", work / "result.json"
    script.write_text(DEVICE_SCRIPT)
    photos = ",".join(str(p) for p in rm.raccoon_photos())
    proc = subprocess.run(
        [str(python214), str(script), str(out), photos, *(str(b) for b in bundles.values())],
        cwd=work,  # not the repo root: edge_yolo must come from the environment's install
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def test_environment_is_the_old_runtime_only(on_device):
    assert on_device["numpy"].startswith("1.")
    assert on_device["loaded"] == ["tflite_runtime"]
    for run in on_device["bundles"].values():
        assert run["runtime"] == "tflite_runtime"
        assert run["lone_file_same"]  # embedded metadata read without ai-edge-litert's schema


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_tflite_runtime_214_matches_ai_edge_litert(on_device, bundles, precision):
    bundle = bundles[precision]
    run = on_device["bundles"][str(bundle)]
    meta = BundleMeta.read(bundle)
    refs = np.load(bundle / "reference.npz")
    detector = Detector(bundle, threads=1, conf=0.25)
    assert detector.backend.runtime == "ai_edge_litert"
    box, cls = detector.backend.infer(refs["images"])
    old_box, old_cls = np.asarray(run["box_dist"]), np.asarray(run["cls_logits"])
    if precision == "fp32":
        np.testing.assert_allclose(old_box, box, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(old_cls, cls, rtol=1e-5, atol=1e-4)
        box_atol, score_atol = 1e-2, 1e-5
    else:
        # The int8 kernels of the two runtimes requantize differently and the differences
        # accumulate over ~180 layers (measured on this model: mean < 1 step, max 9 steps),
        # so the two agree to a few quantization steps, and their boxes by IoU (measured 0.91
        # at worst: 9 steps on a DFL bin moved one edge by ~4 input pixels).
        for got, want, name in ((old_box, box, "box_dist"), (old_cls, cls, "cls_logits")):
            steps = np.abs(got - want) / meta.output(name).scale
            assert steps.mean() < 1.5 and steps.max() <= 16, (name, steps.mean(), steps.max())
        box_atol, score_atol = None, 0.05
    photos = rm.raccoon_photos()
    assert len(run["detections"]) == len(photos)
    for photo, old in zip(photos, run["detections"]):
        new = detector(str(photo))
        assert len(new) == len(old["scores"]) > 0, photo.name
        old_xyxy = np.asarray(old["xyxy"], np.float32)
        if box_atol is not None:
            np.testing.assert_allclose(old_xyxy, new.xyxy, atol=box_atol)
        else:  # int8: a few steps on a DFL bin can move one edge by a few input pixels
            ious = [_iou(a, b) for a, b in zip(old_xyxy, new.xyxy)]
            assert min(ious) >= 0.85, (photo.name, ious)
        np.testing.assert_allclose(np.asarray(old["scores"]), new.scores, atol=score_atol)
        np.testing.assert_array_equal(np.asarray(old["class_ids"]), new.class_ids)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.prod(np.clip(rb - lt, 0, None)))
    union = float(np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2])) - inter
    return inter / union
