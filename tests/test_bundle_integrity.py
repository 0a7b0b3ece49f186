"""A bundle is checked against what was exported: checksums, paths inside it, typed fields."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import runtime_models as rm

from edge_yolo import Detector
from edge_yolo.runtime import BundleError
from edge_yolo.runtime.bundle import META_FILE, BundleMeta


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory):
    return rm.exported_bundle(rm.cache_root(tmp_path_factory), "onnx", "fp32")


@pytest.fixture
def bundle(onnx_bundle, tmp_path):
    return shutil.copytree(onnx_bundle, tmp_path / onnx_bundle.name)


def _edit(bundle, **changes):
    meta = json.loads((bundle / META_FILE).read_text())
    for key, value in changes.items():
        target = meta
        *path, last = key.split(".")
        for part in path:
            target = target[part]
        target[last] = value
    (bundle / META_FILE).write_text(json.dumps(meta))


def test_every_file_is_recorded_with_its_checksum(onnx_bundle):
    meta = BundleMeta.read(onnx_bundle)
    assert set(meta.files) == {"model.onnx", "reference.npz", "README.md"}
    assert all(len(d) == 64 for d in meta.files.values())


def test_flipped_bytes_in_the_model_are_refused_naming_the_file(bundle):
    blob = np.load(bundle / "reference.npz")["images"][:1]
    before = Detector(bundle, threads=1).backend.infer(blob)
    onnx = pytest.importorskip("onnx")
    data = bytearray((bundle / "model.onnx").read_bytes())
    weights = max(onnx.load(str(bundle / "model.onnx")).graph.initializer,
                  key=lambda t: len(t.raw_data)).raw_data
    start = data.find(weights)  # the largest weight tensor's bytes: the protobuf stays valid
    assert start > 0
    for i in range(start + 3, start + len(weights), 64):  # high bytes of float32 weights
        data[i] ^= 0x40
    (bundle / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model.onnx: the file differs from what was exported"):
        Detector(bundle)
    # what the check protects from: the runtime loads the file and answers something else
    after = Detector(bundle, threads=1, check_files=False).backend.infer(blob)
    assert np.abs(after[1] - before[1]).max() > 1e-2


@pytest.mark.parametrize("name", ["reference.npz", "README.md"])
def test_any_changed_file_is_refused(bundle, name):
    with open(bundle / name, "ab") as f:
        f.write(b"\n")
    with pytest.raises(BundleError, match=f"{name}: the file differs"):
        Detector(bundle)


def test_a_missing_listed_file_is_refused(bundle):
    (bundle / "README.md").unlink()
    with pytest.raises(BundleError, match="README.md: listed in edge_yolo.json but missing"):
        Detector(bundle)


def test_a_bundle_without_checksums_is_refused_unless_told(bundle):
    _edit(bundle, files={})
    with pytest.raises(BundleError, match="records no file checksums"):
        Detector(bundle)
    assert Detector(bundle, threads=1, check_files=False).meta.files == {}


@pytest.mark.parametrize(
    "value", ["/etc/hostname", "../../../../etc/hostname", "sub/../../model.onnx"]
)
def test_paths_outside_the_bundle_are_refused(bundle, value):
    _edit(bundle, model_file=value)
    with pytest.raises(BundleError, match="model_file .* points outside the bundle"):
        Detector(bundle, check_files=False)


def test_a_reference_outside_the_bundle_is_refused(bundle):
    from edge_yolo.runtime.verify import verify_bundle

    _edit(bundle, references=["../elsewhere.npz"])
    with pytest.raises(BundleError, match=r"references\[0\] '../elsewhere.npz' points outside"):
        verify_bundle(bundle, check_files=False)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("strides", [0, 16, 32], "strides must be three of 8, 16, 32, 64"),
        ("normalization.scale", "x", "normalization.scale must be a positive number"),
        ("normalization.mean", [0, 0], "normalization.mean must be three numbers"),
        ("normalization.pad_value", 300, "normalization.pad_value must be an integer in 0..255"),
        ("imgsz", [160, 100], "imgsz must be"),
        ("imgsz", "160", "imgsz must be"),
        ("names", [], "names must be a non-empty list of strings"),
        ("names", ["a", 1], "names must be a non-empty list"),
        ("reg_max", 0, "reg_max must be an integer in 2..64"),
        ("reg_max", True, "reg_max must be an integer"),
        ("precision", "int4", "precision must be one of"),
        ("backend", "coreml", "backend must be one of"),
        ("layout", "CHWN", "layout must be NCHW or NHWC"),
        ("model_file", 5, "model_file must be a string"),
        ("references", "reference.npz", "references must be a list of file names"),
        ("files", {"model.onnx": "abc"}, r"files\['model.onnx'\] must be a SHA-256"),
        ("extra", [], "extra must be an object"),
    ],
)
def test_every_field_is_type_and_range_checked(bundle, key, value, message):
    _edit(bundle, **{key: value})
    with pytest.raises(BundleError, match=f"edge_yolo.json: {message}"):
        Detector(bundle, check_files=False)


def test_tensor_specs_are_checked(bundle):
    meta = json.loads((bundle / META_FILE).read_text())
    meta["outputs"][1]["scale"] = -1.0
    (bundle / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"outputs\[1\].scale must be a positive number"):
        Detector(bundle, check_files=False)


def test_bad_json_and_a_missing_key_are_refused(bundle):
    (bundle / META_FILE).write_text('{"model": "gelan-t",')
    with pytest.raises(BundleError, match="edge_yolo.json: metadata is not valid JSON"):
        Detector(bundle)
    (bundle / META_FILE).write_text('{"model": "gelan-t"}')
    with pytest.raises(BundleError, match="edge_yolo.json: metadata is missing 'names'"):
        Detector(bundle)


def test_a_lone_model_file_gets_the_same_field_checks(onnx_bundle, tmp_path):
    onnx = pytest.importorskip("onnx")
    from edge_yolo.runtime.bundle import META_KEY

    model = onnx.load(str(onnx_bundle / "model.onnx"))
    for prop in model.metadata_props:
        if prop.key == META_KEY:
            meta = json.loads(prop.value)
            meta["strides"] = [0, 16, 32]
            prop.value = json.dumps(meta)
    lone = tmp_path / "lone.onnx"
    onnx.save(model, str(lone))
    with pytest.raises(BundleError, match=r"lone.onnx \(embedded metadata\): strides must be"):
        Detector(lone)
