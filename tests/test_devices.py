"""Board profiles (devices/*.yaml) load into DeviceProfile and refuse what they cannot mean."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_yolo.export import TARGETS, DeviceProfile, TargetError, list_devices, load_device
from edge_yolo.export.targets import devices_dir

BOARDS = ["rpi4", "rpi5", "jetson-orin-nano", "jetson-orin-nx", "intel-cpu"]


def test_the_documented_boards_exist():
    assert set(BOARDS) <= set(list_devices())


@pytest.mark.parametrize("board", list_devices())
def test_every_profile_loads_and_is_consistent(board):
    d = load_device(board)
    assert isinstance(d, DeviceProfile) and d.name == board
    spec = TARGETS[d.target]
    assert d.backend == spec.backend and d.precision in spec.precisions
    assert d.imgsz % 32 == 0 and d.threads > 0 and d.calib_size > 0
    assert d.install.strip() and d.description.strip()
    assert board in (devices_dir() / "README.md").read_text()


@pytest.mark.parametrize(
    ("board", "target", "backend"),
    [
        ("rpi4", "rpi", "tflite"),
        ("rpi5", "rpi", "tflite"),
        ("jetson-orin-nano", "jetson", "tensorrt"),
        ("jetson-orin-nx", "jetson", "tensorrt"),
        ("intel-cpu", "intel", "openvino"),
    ],
)
def test_boards_map_to_their_runtime(board, target, backend):
    d = load_device(board)
    assert (d.target, d.backend) == (target, backend)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "board.yaml"
    p.write_text(text)
    return p


BASE = """\
target: intel
backend: openvino
precision: int8
imgsz: 320
threads: 2
install: pip install edge-yolo[openvino]
"""


def test_a_profile_by_path_and_its_defaults(tmp_path):
    d = load_device(_write(tmp_path, BASE))
    assert (d.name, d.calib_size, d.imgsz) == ("board", 300, 320)


def test_unknown_key_is_refused_naming_key_and_file(tmp_path):
    p = _write(tmp_path, BASE + "thraeds: 4\n")
    with pytest.raises(TargetError) as e:
        load_device(p)
    assert "'thraeds'" in str(e.value) and str(p) in str(e.value)


def test_missing_key_is_refused(tmp_path):
    p = _write(tmp_path, BASE.replace("install: pip install edge-yolo[openvino]\n", ""))
    with pytest.raises(TargetError, match="missing key.*install"):
        load_device(p)


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("precision: int8", "precision: int4", "does not support precision 'int4'"),
        ("backend: openvino", "backend: tflite", "does not match target 'intel'"),
        ("imgsz: 320", "imgsz: 300", "multiple of the stride 32"),
        ("threads: 2", "threads: 0", "threads must be a positive integer"),
        ("target: intel", "target: coral", "unknown export target 'coral'"),
    ],
)
def test_inconsistent_profiles_are_refused_naming_the_file(tmp_path, old, new, match):
    p = _write(tmp_path, BASE.replace(old, new))
    with pytest.raises(TargetError, match=match) as e:
        load_device(p)
    assert str(p) in str(e.value)


def test_malformed_yaml_and_unknown_board(tmp_path):
    with pytest.raises(TargetError, match="not valid YAML"):
        load_device(_write(tmp_path, "target: [intel\n"))
    with pytest.raises(TargetError, match="a mapping"):
        load_device(_write(tmp_path, "- intel\n"))
    with pytest.raises(TargetError, match="no such device profile.*rpi5"):
        load_device("rpi9")


def test_devices_dir_can_be_moved(tmp_path, monkeypatch):
    (tmp_path / "myboard.yaml").write_text(BASE)
    monkeypatch.setenv("EDGE_YOLO_DEVICES", str(tmp_path))
    assert list_devices() == ["myboard"]
    assert load_device("myboard").target == "intel"
