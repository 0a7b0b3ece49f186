"""The on-device Detector: loading every kind of artifact path, the Detections API, batching,
threads, and a clear error for each kind of bad input."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import runtime_models as rm
import torch

from edge_yolo import Detector
from edge_yolo.runtime import (
    BackendError,
    BundleError,
    Detections,
    ImageError,
    draw_detections,
    processing,
)
from edge_yolo.runtime.backends import default_threads

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return rm.fitted_checkpoint(rm.cache_root(tmp_path_factory))


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory):
    return rm.exported_bundle(rm.cache_root(tmp_path_factory), "onnx", "fp32")


@pytest.fixture(scope="module")
def detector(onnx_bundle):
    return Detector(onnx_bundle, threads=1, conf=0.1)


@pytest.fixture(scope="module")
def photo(raccoon_images):
    return processing.read_image(str(raccoon_images[-1]))  # raccoon-12: two raccoons


def _same(a: Detections, b: Detections, atol: float = 0.05) -> None:
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=atol)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-3)
    np.testing.assert_array_equal(a.class_ids, b.class_ids)


# ---------------------------------------------------------------- loading


def test_bundle_dir_metadata_file_lone_file_and_checkpoint_agree(
    onnx_bundle, checkpoint, photo, tmp_path
):
    ref = Detector(onnx_bundle, threads=1, conf=0.1)(photo)
    assert ref.class_names == ["raccoon"]
    via_json = Detector(onnx_bundle / "edge_yolo.json", threads=1, conf=0.1)(photo)
    lone = tmp_path / "lone.onnx"  # no edge_yolo.json beside it: metadata read from the file
    shutil.copy(onnx_bundle / "model.onnx", lone)
    lone_det = Detector(lone, threads=1, conf=0.1)
    assert lone_det.backend.name == "onnxruntime" and lone_det.imgsz == (rm.IMGSZ, rm.IMGSZ)
    torch_det = Detector(checkpoint, threads=1, conf=0.1)
    assert torch_det.backend.name == "torch"
    for other in (via_json, lone_det(photo), torch_det(photo)):
        _same(ref, other, atol=0.02)


def test_from_model_runs_a_model_object_without_touching_it(checkpoint, photo, onnx_bundle):
    from edge_yolo.models import is_fused, load_model

    model, ckpt = load_model(checkpoint)
    det = Detector.from_model(model, imgsz=rm.IMGSZ, names=ckpt["names"], threads=1, conf=0.1)
    assert not is_fused(model)  # the detector fused its own copy
    _same(det(photo), Detector(onnx_bundle, threads=1, conf=0.1)(photo), atol=0.02)


# ---------------------------------------------------------------- Detections


def test_detections_fields_and_helpers(detector, photo):
    dets = detector(photo)
    h, w = photo.shape[:2]
    assert dets.xyxy.dtype == np.float32 and dets.xyxy.shape == (len(dets), 4)
    assert dets.scores.dtype == np.float32 and dets.class_ids.dtype == np.int64
    assert (dets.xyxy[:, [0, 2]] <= w).all() and (dets.xyxy[:, [1, 3]] <= h).all()
    assert (dets.xyxy >= 0).all() and (dets.xyxy[:, 2:] > dets.xyxy[:, :2]).all()
    assert list(dets.scores) == sorted(dets.scores, reverse=True) and dets.scores.min() > 0.1
    assert dets.labels == ["raccoon"] * len(dets) and dets.image_shape == (h, w)
    assert set(dets.timings) == {"pre", "infer", "post"} and min(dets.timings.values()) >= 0
    first = next(iter(dets))
    assert first.name == "raccoon" and first.score == pytest.approx(float(dets.scores[0]))
    assert first.xyxy == pytest.approx(tuple(float(v) for v in dets.xyxy[0]))
    d = json.loads(json.dumps(dets.to_dict()))
    assert len(d["detections"]) == len(dets) and d["image_shape"] == [h, w]
    before = photo.copy()
    drawn = dets.draw(photo)
    assert drawn.shape == photo.shape and (drawn != photo).any()
    np.testing.assert_array_equal(photo, before)  # drawing works on a copy
    np.testing.assert_array_equal(draw_detections(photo, dets), drawn)
    assert "raccoon" in repr(dets)


def test_detections_match_the_annotations(detector, raccoon_images):
    """The fitted model finds each annotated raccoon: boxes really are in original pixels."""
    for path in raccoon_images:
        dets = detector(path)
        for gt in rm.voc_boxes(path):
            ious = _iou(gt, dets.xyxy)
            assert ious.max() > 0.5, f"{path.name}: no detection on {gt}"


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), 1)
    area = lambda b: np.prod(b[..., 2:] - b[..., :2], -1)  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


def test_thresholds_and_max_det(onnx_bundle, photo):
    low = Detector(onnx_bundle, threads=1, conf=0.01, iou=0.9)(photo)
    high = Detector(onnx_bundle, threads=1, conf=0.5)(photo)
    assert len(low) > len(high) >= 1
    assert len(Detector(onnx_bundle, threads=1, conf=0.01, iou=0.9, max_det=3)(photo)) == 3
    for bad in ({"conf": 1.5}, {"iou": 0.0}, {"max_det": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Detector(onnx_bundle, **bad)


# ---------------------------------------------------------------- images and batches


def test_image_inputs_paths_gray_and_bgra(detector, raccoon_images, photo):
    path = raccoon_images[-1]
    ref = detector(photo)
    _same(detector(str(path)), ref, atol=1e-4)
    _same(detector(path), ref, atol=1e-4)
    _same(detector(cv2.cvtColor(photo, cv2.COLOR_BGR2BGRA)), ref, atol=1e-4)
    gray = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    _same(detector(gray), detector(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)), atol=1e-4)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (np.zeros((64, 64, 3), np.float32), "uint8"),
        (np.zeros((64, 64, 5), np.uint8), "got 5"),
        ([[1, 2], [3, 4]], "got list"),
        (None, "got NoneType"),
    ],
)
def test_bad_images_are_refused(detector, image, message):
    with pytest.raises(ImageError, match=message):
        detector(image)


def test_paths_that_are_not_images_are_refused(detector, tmp_path):
    text = tmp_path / "labels.txt"
    text.write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(ImageError, match="labels.txt: not a readable image"):
        detector(str(text))
    with pytest.raises(ImageError, match="nope.jpg: no such image file"):
        detector(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="sequence of images"):
        detector.batch(np.zeros((8, 8, 3), np.uint8))


def _count_infer_calls(monkeypatch, backend) -> list[int]:
    calls: list[int] = []
    real = backend.infer

    def counting(blob):
        calls.append(blob.shape[0])
        return real(blob)

    monkeypatch.setattr(backend, "infer", counting)
    return calls


def test_batch_equals_single_calls_one_infer_per_chunk(checkpoint, raccoon_images, monkeypatch):
    det = Detector(checkpoint, threads=1, conf=0.1)  # torch: batches of up to 32 in one call
    singles = [det(p) for p in raccoon_images]
    calls = _count_infer_calls(monkeypatch, det.backend)
    batched = det.batch(raccoon_images)
    assert calls == [len(raccoon_images)]
    for a, b in zip(singles, batched):
        _same(a, b, atol=1e-3)
        assert a.image_shape == b.image_shape


def test_batch_on_a_static_batch_model_runs_chunks_of_one(detector, raccoon_images, monkeypatch):
    assert detector.backend.max_batch == 1
    calls = _count_infer_calls(monkeypatch, detector.backend)
    out = detector.batch(raccoon_images[:3])
    assert calls == [1, 1, 1] and len(out) == 3
    assert detector.batch([]) == []


def test_threads_reach_the_runtime(onnx_bundle, checkpoint):
    ort_det = Detector(onnx_bundle, threads=1)
    assert ort_det.backend.session.get_session_options().intra_op_num_threads == 1
    assert Detector(onnx_bundle).backend.threads == default_threads()
    Detector(checkpoint, threads=1)
    assert torch.get_num_threads() == 1


# ---------------------------------------------------------------- bad artifacts


def test_missing_path(tmp_path):
    with pytest.raises(
        FileNotFoundError, match="nothing-here: no such bundle directory or model file"
    ):
        Detector(tmp_path / "nothing-here")


def test_broken_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"definitely not a zip archive")
    with pytest.raises(ValueError, match="weights.pt: not a valid edge-yolo checkpoint"):
        Detector(bad)


def test_unknown_formats(tmp_path):
    notes = tmp_path / "model.txt"
    notes.write_text("hello")
    with pytest.raises(BundleError, match=r"model.txt: unknown model format '\.txt'"):
        Detector(notes)
    with pytest.raises(BundleError, match="not an edge-yolo bundle .no edge_yolo.json"):
        Detector(tmp_path)


def _copy_bundle(bundle, tmp_path):
    dst = tmp_path / bundle.name
    shutil.copytree(bundle, dst)
    return dst


def test_bundle_whose_model_file_is_missing(onnx_bundle, tmp_path):
    b = _copy_bundle(onnx_bundle, tmp_path)
    (b / "model.onnx").unlink()
    with pytest.raises(BundleError, match="names model file 'model.onnx', which is missing"):
        Detector(b)


def test_truncated_onnx_names_the_file(onnx_bundle, tmp_path):
    b = _copy_bundle(onnx_bundle, tmp_path)
    data = (b / "model.onnx").read_bytes()
    (b / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="model.onnx: the file differs from what was exported"):
        Detector(b)  # the bundle's checksum catches it first
    with pytest.raises(BackendError, match="model.onnx: onnxruntime cannot load this model") as e:
        Detector(b, check_files=False)  # and the runtime still says so, in one line
    assert len(str(e.value)) < 500
    lone = tmp_path / "cut.onnx"
    lone.write_bytes(data[: len(data) // 3])
    with pytest.raises(BundleError, match="cut.onnx: not a loadable ONNX model"):
        Detector(lone)


def test_tampered_metadata_is_refused(onnx_bundle, tmp_path):
    b = _copy_bundle(onnx_bundle, tmp_path)
    meta = json.loads((b / "edge_yolo.json").read_text())
    (b / "edge_yolo.json").write_text(json.dumps({**meta, "imgsz": [128, 128]}))
    with pytest.raises(BackendError, match=r"metadata says input NCHW \[3, 128, 128\]"):
        Detector(b)
    (b / "edge_yolo.json").write_text(json.dumps({**meta, "names": ["a", "b", "c"]}))
    with pytest.raises(
        BackendError, match=r"output 'cls_logits' has shape \[1, 1, 525\].*\(3 classes"
    ):
        Detector(b)
    (b / "edge_yolo.json").write_text(json.dumps({**meta, "backend": "caffe"}))
    with pytest.raises(BundleError, match="backend must be one of .*got 'caffe'"):
        Detector(b)
    (b / "edge_yolo.json").write_text("{not json")
    with pytest.raises(BundleError, match="edge_yolo.json: metadata is not valid JSON"):
        Detector(b)


def test_backend_choice(onnx_bundle):
    with pytest.raises(BackendError, match="unknown backend 'cuda'"):
        Detector(onnx_bundle, backend="cuda")
    with pytest.raises(
        BackendError, match="tensorrt backend needs the 'tensorrt' and 'cuda-python' packages"
    ):
        Detector(onnx_bundle, backend="tensorrt")


def test_onnx_metadata_is_read_without_a_session(onnx_bundle, monkeypatch):
    """A lone .onnx's metadata comes from the file's protobuf fields, not from a second
    InferenceSession; it equals what onnx itself reads."""
    onnx = pytest.importorskip("onnx")
    import onnxruntime as ort

    from edge_yolo.runtime.backends import read_metadata
    from edge_yolo.runtime.bundle import META_KEY, BundleMeta
    from edge_yolo.runtime.onnx_file import read_onnx_metadata

    path = onnx_bundle / "model.onnx"
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert read_onnx_metadata(path) == props and META_KEY in props

    def no_session(*args, **kwargs):
        raise AssertionError("an InferenceSession was built to read metadata")

    monkeypatch.setattr(ort, "InferenceSession", no_session)
    # the same metadata, but for the file checksums, which only the bundle's JSON can hold
    assert read_metadata(path).to_dict() == {**BundleMeta.read(onnx_bundle).to_dict(), "files": {}}


def test_val_scores_a_bundle_as_its_checkpoint(checkpoint, onnx_bundle, capsys, tmp_path):
    """One evaluation path: `edge-yolo val` on the FP32 bundle gives the checkpoint's mAP."""
    from edge_yolo.cli import main
    from edge_yolo.eval import EVAL, validate

    data = str(rm.REPO / "tests" / "fixtures" / "raccoon")
    kw = {"split": "all", "threads": 1, "progress": False}
    by_ckpt, info = validate(checkpoint, data, **kw)
    by_bundle, bundle_info = validate(onnx_bundle, data, **kw)
    assert info["kind"] == "checkpoint" and bundle_info["kind"] == "bundle"
    assert by_ckpt.num_images == by_bundle.num_images == 6 and by_ckpt.map50 > 0.5
    assert abs(by_ckpt.map50_95 - by_bundle.map50_95) < 1e-3
    assert info["settings"] == bundle_info["settings"] == EVAL.to_dict()
    out = tmp_path / "m.json"
    assert main(["val", "--weights", str(onnx_bundle), "--data", data, "--split", "all",
                 "--threads", "1", "--no-progress", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "onnx/fp32 on onnxruntime" in printed and str(EVAL) in printed
    assert json.loads(out.read_text())["map50_95"] == pytest.approx(by_bundle.map50_95)
