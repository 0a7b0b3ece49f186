"""The capability table: every target/precision pair is either exported or refused up front."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from edge_yolo.export import (
    TARGETS,
    ExportError,
    ExportOptions,
    TargetError,
    check_target,
    resolve,
    run_export,
)
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
    assert set(TARGETS["intel"].precisions) == {"fp32", "fp16", "bf16", "int8"}
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


# ------------------------------------------------------------ options live in the table too


@pytest.mark.parametrize(
    ("target", "option", "flag"),
    [("rpi", {"dynamic": True}, "--dynamic"), ("rpi", {"opset": 17}, "--opset"),
     ("intel", {"opset": 17}, "--opset"), ("intel", {"simplify": False}, "--no-simplify")],
)
def test_a_shared_option_the_target_does_not_honour_is_refused(tmp_path, target, option, flag):
    ckpt = tmp_path / "x.pt"
    ckpt.write_bytes(b"not read: the options are checked first")
    with pytest.raises(TargetError, match=f"{flag}: target '{target}' does not support"):
        run_export(ckpt, ExportOptions(target=target, out=tmp_path, **option))


def _parse(*argv: str):
    import argparse

    from edge_yolo.export.cli import add_arguments, table_options

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--weights", __file__, *argv])
    return table_options(args, resolve(args.target)[0].name)


def test_cli_flags_map_to_options_through_the_table():
    shared, own = _parse("--target", "rpi5", "--calib-ranges", "moving-average",
                         "--calibrated-input-range", "--calib-threads", "2")
    assert shared == {} and own == {
        "calib_ranges": "moving-average", "exact_input_range": False, "calib_threads": 2
    }
    shared, own = _parse("--target", "jetson", "--dynamic", "--opset", "17", "--no-simplify",
                         "--calibrate-method", "entropy")
    assert shared == {"dynamic": True, "opset": 17, "simplify": False}
    assert own == {"calibrate_method": "entropy"}
    assert _parse("--target", "intel", "--nncf-preset", "performance") == (
        {}, {"preset": "performance"}
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--target", "onnx", "--nncf-preset", "mixed"], "--nncf-preset is not an option of target"),
     (["--target", "rpi", "--dynamic"], "--dynamic is not an option of target 'rpi'"),
     (["--target", "intel", "--calib-ranges", "minmax"], "--calib-ranges is not an option")],
)
def test_cli_flags_a_target_does_not_take_are_refused(argv, message):
    with pytest.raises(TargetError, match=message):
        _parse(*argv)


def test_every_table_option_is_a_field_of_the_exporter_options():
    import dataclasses

    from edge_yolo.export.pipeline import load_exporter

    for spec in TARGETS.values():
        kind = load_exporter(spec).options_type
        fields = {f.name for f in dataclasses.fields(kind)} if kind else set()
        assert {o.field for o in spec.options} <= fields, spec.name


def test_target_options_as_a_dict_refuse_unknown_keys(tmp_path: Path):
    ckpt = tmp_path / "x.pt"
    ckpt.write_bytes(b"not read")
    with pytest.raises(TargetError, match="has no option"):
        run_export(ckpt, ExportOptions(target="rpi", out=tmp_path,
                                       target_options={"calib_rangez": "minmax"}))


def test_a_bundle_is_named_for_its_board_and_never_silently_replaced(tmp_path: Path):
    """rpi4 and rpi5 exports of one checkpoint must not overwrite each other; re-exporting
    over an existing bundle needs force."""
    from export_helpers import textured_checkpoint

    ckpt = textured_checkpoint(tmp_path / "c.pt", 64)
    first = run_export(ckpt, ExportOptions(target="onnx", imgsz=64, out=tmp_path, threads=1))
    assert first.name == "gelan-t-onnx-fp32"
    with pytest.raises(ExportError, match="gelan-t-onnx-fp32 already exists; pass force=True"):
        run_export(ckpt, ExportOptions(target="onnx", imgsz=64, out=tmp_path, threads=1))
    again = run_export(ckpt, ExportOptions(target="onnx", imgsz=64, out=tmp_path, threads=1,
                                           force=True))
    assert again == first and (again / "edge_yolo.json").is_file()
