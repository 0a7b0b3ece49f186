"""``onnx`` target, the ONNX smoke test (issue 2 item 8) and the onnxruntime backend."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from export_helpers import RACCOON_IMAGES, textured_checkpoint  # noqa: E402

from edge_yolo.export import export  # noqa: E402
from edge_yolo.runtime.bundle import META_KEY, BundleMeta  # noqa: E402

IMGSZ = 96


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return textured_checkpoint(tmp_path_factory.mktemp("ckpt") / "t.pt", IMGSZ)


@pytest.fixture(scope="module")
def bundle(ckpt, tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    # fp32 takes no calibration; --calib only makes references/agreement use real photos
    return export(ckpt, "onnx", imgsz=IMGSZ, calib=str(RACCOON_IMAGES),
                  out=tmp_path_factory.mktemp("out"), threads=1)


def test_fused_gelan_t_onnx_smoke(tmp_path):
    """gelan-t, fused, exports at opset >= 17, passes onnx.checker, and onnxruntime reproduces
    the torch raw outputs to 1e-4 (on a real photo, with outputs that vary per anchor)."""
    import cv2

    from edge_yolo.models import ExportModel, load_model
    from edge_yolo.runtime.processing import preprocess

    ckpt = textured_checkpoint(tmp_path / "gelan-t.pt", 128, model="gelan-t")
    model, _ = load_model(ckpt)
    net = ExportModel(model.fuse().eval()).eval()
    image = cv2.imread(str(sorted(RACCOON_IMAGES.glob("*.jpg"))[1]))
    x = torch.from_numpy(preprocess(image, 128)[0])
    path = tmp_path / "gelan-t.onnx"
    torch.onnx.export(net, (x,), str(path), input_names=["images"],
                      output_names=["box_dist", "cls_logits"], opset_version=18, dynamo=True)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"images": x.numpy()}
    )
    with torch.no_grad():
        want = [t.numpy() for t in net(x)]
    for g, w in zip(got, want):
        assert g.shape == w.shape and w.std() > 0.05  # not a constant output
        assert np.abs(g - w).max() <= 1e-4


def test_bundle_layout_and_metadata(bundle, ckpt):
    assert bundle.name == "gelan-t-onnx-fp32"
    assert sorted(p.name for p in bundle.iterdir()) == [
        "README.md", "edge_yolo.json", "model.onnx", "reference.npz"
    ]
    meta = BundleMeta.read(bundle)
    assert (meta.target, meta.precision, meta.backend, meta.quantization) == (
        "onnx", "fp32", "onnxruntime", "none"
    )
    assert meta.names == ["raccoon", "dog", "cat"] and meta.imgsz == [IMGSZ, IMGSZ]
    anchors = sum((IMGSZ // s) ** 2 for s in (8, 16, 32))
    assert meta.inputs[0].shape == [1, 3, IMGSZ, IMGSZ]
    assert [o.shape for o in meta.outputs] == [[1, 64, anchors], [1, 3, anchors]]
    import hashlib

    assert meta.source_checkpoint_sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert meta.calibration is None  # nothing was quantized
    assert meta.accuracy["image_source"] == str(RACCOON_IMAGES) and meta.accuracy["images"] == 6
    assert meta.accuracy["dist_max_abs_diff"] <= 1e-3
    assert meta.accuracy["top_class_agreement"] == 1.0
    # no staging directories left behind beside the bundle
    assert [p.name for p in bundle.parent.iterdir()] == [bundle.name]


def test_onnx_file_is_checked_simplified_and_carries_metadata(bundle):
    proto = onnx.load(str(bundle / "model.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [o.name for o in proto.graph.output] == ["box_dist", "cls_logits"]
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"Identity", "Shape", "Gather", "BatchNormalization"}
    embedded = {p.key: p.value for p in proto.metadata_props}[META_KEY]
    on_disk = json.loads((bundle / "edge_yolo.json").read_text())
    assert json.loads(embedded) == {**on_disk, "files": {}}  # checksums: the JSON's alone
    assert set(on_disk["files"]) == {"model.onnx", "reference.npz", "README.md"}


def test_reference_outputs_reproduce_with_the_backend(bundle):
    from edge_yolo.runtime.backends import get_backend

    meta = BundleMeta.read(bundle)
    ref = np.load(bundle / "reference.npz")
    assert ref["images"].shape == (2, 3, IMGSZ, IMGSZ)
    backend = get_backend("onnxruntime")(bundle / "model.onnx", meta, threads=1)
    box, cls = backend.infer(ref["images"])  # static batch 1: the backend loops
    np.testing.assert_allclose(box, ref["box_dist"], atol=1e-5)
    np.testing.assert_allclose(cls, ref["cls_logits"], atol=1e-5)
    # the references are real inputs: outputs vary across anchors and images
    assert ref["cls_logits"].std() > 0.02
    assert not np.allclose(ref["box_dist"][0], ref["box_dist"][1])


def test_detector_on_the_bundle_matches_torch(bundle, ckpt):
    import cv2

    from edge_yolo.runtime.detector import Detector

    image = cv2.imread(str(sorted(RACCOON_IMAGES.glob("*.jpg"))[0]))
    exported = Detector(bundle, threads=1)(image)
    reference = Detector(ckpt, threads=1)(image)
    assert len(reference) > 0
    assert abs(len(exported) - len(reference)) <= max(1, len(reference) // 10)
    np.testing.assert_allclose(exported.xyxy[0], reference.xyxy[0], atol=1e-2)
    np.testing.assert_allclose(exported.scores[0], reference.scores[0], atol=1e-4)


def test_lone_onnx_file_loads_from_embedded_metadata(bundle, tmp_path):
    from edge_yolo.runtime.detector import Detector

    lone = tmp_path / "lone.onnx"
    lone.write_bytes((bundle / "model.onnx").read_bytes())
    det = Detector(lone, threads=1)
    assert det.names == ["raccoon", "dog", "cat"] and det.backend.name == "onnxruntime"


def test_truncated_onnx_raises_backend_error_naming_the_file(bundle, tmp_path):
    from edge_yolo.runtime.backends import BackendError, get_backend

    meta = BundleMeta.read(bundle)
    bad = tmp_path / "model.onnx"
    data = (bundle / "model.onnx").read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(BackendError, match=str(bad)):
        get_backend("onnxruntime")(bad, meta, threads=1)


def test_metadata_contradicting_the_file_is_refused(bundle):
    from edge_yolo.runtime.backends import BackendError, get_backend

    meta = BundleMeta.read(bundle)
    meta.names = meta.names[:2]  # the file has 3 class channels
    with pytest.raises(BackendError, match="cls_logits"):
        get_backend("onnxruntime")(bundle / "model.onnx", meta, threads=1)


def test_reexport_replaces_the_bundle_atomically(bundle, ckpt):
    before = (bundle / "edge_yolo.json").stat().st_mtime_ns
    again = export(ckpt, "onnx", imgsz=IMGSZ, out=bundle.parent, threads=1, num_references=1,
                   agreement_images=1, force=True)  # replacing needs force
    assert again == bundle and (bundle / "edge_yolo.json").stat().st_mtime_ns != before
    assert sorted(p.name for p in bundle.parent.iterdir()) == [bundle.name]
    assert oct(bundle.stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.slow
def test_dynamic_batch_export_runs_batches(ckpt, tmp_path):
    from edge_yolo.runtime.backends import get_backend

    path = export(ckpt, "onnx", imgsz=IMGSZ, out=tmp_path, dynamic=True, threads=1)
    meta = BundleMeta.read(path)
    assert meta.inputs[0].shape[0] == -1 and meta.extra["dynamic_batch"] is True
    backend = get_backend("onnxruntime")(path / "model.onnx", meta, threads=1)
    assert backend.max_batch > 1
    ref = np.load(path / "reference.npz")
    box, cls = backend.infer(ref["images"])
    np.testing.assert_allclose(cls, ref["cls_logits"], atol=1e-5)
    np.testing.assert_allclose(box, ref["box_dist"], atol=1e-5)


@pytest.mark.slow
def test_opset_17_uses_the_torchscript_exporter(ckpt, tmp_path):
    path = export(ckpt, "onnx", imgsz=IMGSZ, out=tmp_path, opset=17, threads=1)
    proto = onnx.load(str(path / "model.onnx"))
    assert next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert BundleMeta.read(path).accuracy["dist_max_abs_diff"] <= 1e-3
