"""``edge-yolo report``: one evaluation path for every row, paired-bootstrap intervals, the
three output forms, the gate, and each bundle's own row."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import runtime_models as rm

from edge_yolo.cli import main
from edge_yolo.eval.report import agreement, bootstrap_intervals, gate, paired_bootstrap
from edge_yolo.eval.val import Collected
from edge_yolo.runtime.bundle import BundleMeta

DATA = str(rm.REPO / "tests" / "fixtures" / "raccoon")


def _collected(n: int, shift: float = 0.0, lose: int = 0) -> Collected:
    """n images, one ground-truth box each; predictions found exactly (shifted by ``shift``
    pixels), except the first ``lose`` images, where nothing is found."""
    preds, gts = [], []
    for i in range(n):
        box = np.array([[10.0 + i, 10.0, 60.0 + i, 50.0]], np.float32)
        gts.append((box, np.zeros(1, np.int64)))
        found = i >= lose
        preds.append((box + shift if found else np.zeros((0, 4), np.float32),
                      np.full(int(found), 0.9, np.float32), np.zeros(int(found), np.int64)))
    return Collected(preds, gts, [f"img{i}" for i in range(n)], [], ["a"])


def test_paired_bootstrap_is_zero_for_the_same_model_and_negative_for_a_worse_one():
    base = _collected(30)
    assert paired_bootstrap(base, _collected(30), 50) == (0.0, 0.0)
    lo, hi = paired_bootstrap(base, _collected(30, lose=10), 50)
    assert lo < hi < 0  # a third of the images lost: a drop the interval does not cross 0
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap(base, _collected(29), 10)


def test_intervals_of_many_rows_in_processes_equal_the_serial_ones():
    base = _collected(30)
    rows = [_collected(30, lose=5), _collected(30, shift=6.0), _collected(30)]
    serial = [paired_bootstrap(base, r, 40) for r in rows]
    assert bootstrap_intervals(base, rows, 40, workers=2) == serial
    assert serial[0][1] < 0 and serial[2] == (0.0, 0.0)


def test_agreement_measures_matched_boxes_iou_and_score_error():
    same = agreement(_collected(5), _collected(5))
    assert same["matched_share"] == 1.0 and same["mean_iou"] == pytest.approx(1.0)
    assert same["score_error"] == 0.0
    moved = agreement(_collected(5), _collected(5, shift=8.0, lose=1))
    assert moved["matched_share"] == pytest.approx(0.8) and moved["mean_iou"] < 0.8


def test_gate_names_the_rows_over_the_limit():
    report = {"rows": [{"name": "base", "delta": 0.0}, {"name": "ok", "delta": -1.0},
                       {"name": "bad", "delta": -2.5}]}
    assert gate(report, 1.5) == ["bad: 2.50 mAP50-95 points > 1.5"]
    assert gate(report, 3) == []


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    cached = rm.exported_bundle(rm.cache_root(tmp_path_factory), "onnx", "fp32")
    return shutil.copytree(cached, tmp_path_factory.mktemp("report") / cached.name)


def test_report_of_an_fp32_export_scores_exactly_the_float_model(bundle, tmp_path, capsys,
                                                                 tmp_path_factory):
    weights = rm.fitted_checkpoint(rm.cache_root(tmp_path_factory))
    out = tmp_path / "report"
    code = main(["report", "--weights", str(weights), "--data", DATA, "--split", "all",
                 "--bundles", str(bundle), "--resamples", "30", "--threads", "1",
                 "--out", str(out), "--max-drop", "0.01"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads((out / "report.json").read_text())
    base, row = report["rows"]
    assert base["backend"] == "torch" and row["backend"] == "onnxruntime"
    assert row["map50_95"] == base["map50_95"] > 0.5 and row["delta"] == 0.0
    assert row["delta_ci"] == [0.0, 0.0] and row["agreement"]["matched_share"] == 1.0
    assert row["size_mb"] > 1 and row["latency_ms"] > 0
    assert report["dataset"]["images"] == 6 and report["settings"]["iou"] == 0.7
    assert "onnxruntime" in report["toolchain"] and "PASS" in printed
    assert "| onnx fp32 | onnxruntime |" in (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "<table>" in page
    recorded = BundleMeta.read(bundle).accuracy["report"]
    assert recorded["delta"] == 0.0 and recorded["images"] == 6
    # fidelity to the float model's own boxes: the float model and its fp32 export, exactly 100
    assert base["fidelity"] == row["fidelity"] == 100.0 and row["fidelity_ci"] == [0.0, 0.0]
    assert report["fidelity"]["reference_conf"] == 0.25 and report["fidelity"]["images"] == 6
    assert recorded["fidelity"] == 100.0 and "fidelity" in page


def test_fidelity_on_unlabeled_images_and_a_gate_on_it(bundle, tmp_path, capsys,
                                                        tmp_path_factory):
    weights = rm.fitted_checkpoint(rm.cache_root(tmp_path_factory))
    out = tmp_path / "report"
    code = main(["report", "--weights", str(weights), "--data", DATA, "--bundles", str(bundle),
                 "--fidelity-data", str(rm.RACCOON / "images"), "--resamples", "10",
                 "--threads", "1", "--out", str(out), "--max-drop", "0.5", "--gate",
                 "fidelity", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads((out / "report.json").read_text())
    assert report["fidelity"]["data"] == str(rm.RACCOON / "images")
    assert report["fidelity"]["images"] == 6 and report["dataset"]["images"] == 2  # val split
    assert report["fidelity"]["reference_boxes"] > 0
    assert "PASS (fidelity): no row drops more than 0.5 fidelity points" in printed


@pytest.mark.slow
def test_the_gate_fails_an_int8_export_that_drops(tmp_path, tmp_path_factory, capsys):
    root = rm.cache_root(tmp_path_factory)
    int8 = shutil.copytree(rm.exported_bundle(root, "intel", "int8"), tmp_path / "int8")
    code = main(["report", "--weights", str(rm.fitted_checkpoint(root)), "--data", DATA,
                 "--split", "all", "--bundles", str(int8), "--resamples", "30",
                 "--threads", "1", "--out", str(tmp_path / "r"), "--max-drop", "0.01"])
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    row = report["rows"][1]
    assert row["quantization"] == "ptq" and row["calibration"]["num_images"] == 6
    if row["delta"] < -0.01:
        assert code == 1 and "FAIL (map): 1 rows drop more than 0.01" in printed
    else:
        assert code == 0
    assert row["delta_ci"][0] <= row["delta"] <= row["delta_ci"][1]


def test_report_needs_something_to_compare(tmp_path, tmp_path_factory, capsys):
    weights = rm.fitted_checkpoint(rm.cache_root(tmp_path_factory))
    assert main(["report", "--weights", str(weights), "--data", DATA]) == 2
    assert "nothing to compare" in capsys.readouterr().err


def test_rows_that_would_read_the_same_carry_their_bundle_name():
    from types import SimpleNamespace

    from edge_yolo.eval.report import _name_apart

    rows = [SimpleNamespace(name="torch gelan-t (float baseline)", path="best.pt"),
            SimpleNamespace(name="intel int8 PTQ", path="b/demo-intel-int8-mixed"),
            SimpleNamespace(name="intel int8 PTQ", path="b/demo-intel-int8-performance"),
            SimpleNamespace(name="rpi int8 PTQ", path="b/gelan-t-rpi-int8")]
    _name_apart(rows)
    assert [r.name for r in rows] == [
        "torch gelan-t (float baseline)", "intel int8 PTQ [demo-intel-int8-mixed]",
        "intel int8 PTQ [demo-intel-int8-performance]", "rpi int8 PTQ"]
