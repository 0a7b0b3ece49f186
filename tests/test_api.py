"""The Python API mirrors the CLI: ``edge_yolo.train`` / ``export`` / ``val`` run the same code
and return paths and metrics; mistakes raise the CLI's errors, worded for Python."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

import edge_yolo
from edge_yolo.errors import EdgeYoloError

TINY = dict(epochs=1, imgsz=64, batch=4, nbs=4, workers=0, threads=1, progress=False,
            plots=False, eval_batch=4)


def test_the_packages_are_also_the_functions_and_stay_light():
    assert callable(edge_yolo.train) and callable(edge_yolo.export)
    config = importlib.import_module("edge_yolo.train.config")  # still a package too
    assert callable(edge_yolo.train) and edge_yolo.train.config is config
    assert {"train", "export", "val"} <= set(dir(edge_yolo))


def test_train_export_val_from_python(tmp_path: Path):
    run = edge_yolo.train(model="gelan-t", data="synthetic:8", out=tmp_path / "run", **TINY)
    assert run.best == tmp_path / "run" / "best.pt" and run.last.is_file()
    assert run.epochs_completed == 1 and 0 <= run.final["map50_95"] <= 1
    bundle = edge_yolo.export(run.best, "onnx", out=tmp_path / "exports", threads=1)
    assert bundle.path == tmp_path / "exports" / "gelan-t-onnx-fp32"
    # one epoch on 8 images: the float model is confident nowhere, and the line says so
    acc = bundle.meta.accuracy
    assert acc["confident_anchors"] == 0 and acc["top_class_agreement"] is None
    assert acc["score_mean_abs_diff"] < 1e-3
    assert "not measured where it matters" in bundle.summary()
    assert "input size   64x64 (checkpoint)" in bundle.summary()
    det = edge_yolo.Detector(bundle, threads=1)  # the result is a path too
    assert det.imgsz == (64, 64)
    metrics = edge_yolo.val(bundle, "synthetic:8", batch=4, progress=False, threads=1)
    float_metrics = edge_yolo.val(run.best, "synthetic:8", batch=4, progress=False)
    assert metrics.map50_95 == pytest.approx(float_metrics.map50_95, abs=0.01)

    # a mistake is the CLI's error, with the option spelt as a keyword
    with pytest.raises(EdgeYoloError, match=r"already exists; pass force=True"):
        edge_yolo.export(run.best, "onnx", out=tmp_path / "exports", threads=1)
    with pytest.raises(EdgeYoloError, match=r"resume='.*run'.*exist_ok=True"):
        edge_yolo.train(model="gelan-t", data="synthetic:8", out=tmp_path / "run", **TINY)
    with pytest.raises(EdgeYoloError, match=r"'epoch'"):
        edge_yolo.train(model="gelan-t", data="synthetic:8", epoch=3)  # misspelt: refused
    assert "--" not in str(pytest.raises(EdgeYoloError, edge_yolo.train, resume=tmp_path / "run",
                                         model="gelan-s").value)


def test_the_api_module_needs_no_torch_to_import():
    import subprocess

    code = "import edge_yolo, edge_yolo.api, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
