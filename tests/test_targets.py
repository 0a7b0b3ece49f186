"""The capability table: every target/precision pair is either exported or refused up front."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from edge_yolo.export import TARGETS, ExportOptions, TargetError, check_target, resolve, run_export
from edge_yolo.export.targets import PRECISIONS, capability_table
from edge_yolo.runtime.backends import BACKENDS

PAIRS = list(itertools.product(TARGETS, PRECISIONS))


@pytest.mark.parametrize(("target", "precision"), PAIRS)
def test_capability_table_accepts_or_refuses_with_the_supported_list(target, precision):
    spec = TARGETS[target]
    if precision in spec.precisions:
        assert check_target(target, precision) is spec
    else:
        with pytest.raises(TargetError) as e:
            check_target(target, precision)
        msg = str(e.value)
        assert f"{precision!r}" in msg and ", ".join(spec.precisions) in msg


def test_the_documented_matrix():
    assert TARGETS["onnx"].precisions == ("fp32",)
    assert set(TARGETS["intel"].precisions) == {"fp32", "fp16", "int8"}
    assert set(TARGETS["jetson"].precisions) >= {"fp16", "int8"}
    assert set(TARGETS["rpi"].precisions) == {"fp32", "fp16", "int8"}
    assert {t: s.backend for t, s in TARGETS.items()} == {
        "onnx": "onnxruntime", "intel": "openvino", "jetson": "tensorrt", "rpi": "tflite",
    }


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_names_a_runtime_backend_and_a_default(target):
    spec = TARGETS[target]
    assert spec.backend in BACKENDS and spec.verify_backend in BACKENDS
    assert spec.default_precision in spec.precisions
    module, cls = spec.exporter.split(":")
    assert module.startswith("edge_yolo.export.") and cls
    assert target in capability_table()


def test_unknown_target_lists_targets_and_boards():
    with pytest.raises(TargetError) as e:
        resolve("coral")
    msg = str(e.value)
    for name in [*TARGETS, "rpi5", "jetson-orin-nano", "intel-cpu"]:
        assert name in msg


def test_board_supplies_precision_and_explicit_flag_overrides():
    spec, precision, device = resolve("rpi5")
    assert (spec.name, precision, device.name) == ("rpi", device.precision, "rpi5")
    spec, precision, device = resolve("intel-cpu", "fp16")
    assert (spec.name, precision, device.name) == ("intel", "fp16", "intel-cpu")
    with pytest.raises(TargetError, match="does not support precision 'int8'"):
        resolve("onnx", "int8")


def test_target_default_precision_without_board():
    assert resolve("jetson")[1:] == ("fp16", None)
    assert resolve("onnx")[1:] == ("fp32", None)


def test_refused_before_any_work(tmp_path: Path):
    # The checkpoint does not exist: a capability error proves the check ran first.
    missing = tmp_path / "missing.pt"
    with pytest.raises(TargetError, match="supported: fp32"):
        run_export(missing, ExportOptions(target="onnx", precision="fp16", out=tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("imgsz", [0, 100, -32])
def test_options_refuse_bad_input_size(imgsz):
    with pytest.raises(TargetError, match="multiple of 32"):
        ExportOptions(target="onnx", imgsz=imgsz)


def test_options_refuse_old_opset():
    with pytest.raises(TargetError, match="opset"):
        ExportOptions(target="onnx", opset=13)


def test_target_options_of_the_wrong_type_are_refused(tmp_path: Path):
    from edge_yolo.export.jetson import JetsonOptions

    ckpt = tmp_path / "x.pt"
    ckpt.write_bytes(b"not read: the options are checked first")
    with pytest.raises(TargetError, match="OpenVINOOptions"):
        run_export(
            ckpt, ExportOptions(target="intel", out=tmp_path, target_options=JetsonOptions())
        )
    with pytest.raises(TargetError, match="takes no target options"):
        run_export(ckpt, ExportOptions(target="onnx", out=tmp_path, target_options=JetsonOptions()))
