"""Cross-backend contract (issue 4.4): every artifact the exporters write, run through the same
``Detector``, finds what the PyTorch model finds.

One small model (gelan-t, 1 class, fitted to the raccoon fixture photos: tests/runtime_models.py)
is exported once per target/precision in this session. Each artifact runs on its own backend
(Jetson bundles on onnxruntime: TensorRT needs the board) over the six photos and their mirror
images, and its detections are matched greedily (best score first, same class) to the torch
model's. A backend whose runtime is not installed skips, naming the package.

Tolerances, set from what this model measured (12 images, 15 torch boxes at conf 0.05):
- fp32: every box matched at IoU >= 0.95 both ways, |score diff| <= 0.01; raw scores within
  1e-3. Observed: IoU 1.0000 and score diff < 1e-4 on onnxruntime, OpenVINO and TFLite.
- fp16: >= 90 % of boxes scoring >= 0.1 matched at IoU >= 0.9, |score diff| <= 0.03.
  Observed: all matched, max diff 0.0043 (OpenVINO), 0.0009 (TFLite); Jetson fp16 ONNX is
  float on onnxruntime (the fp16 engine is built by TensorRT on the board): 0.0000.
- int8: >= 80 % of boxes scoring >= 0.25 matched at IoU >= 0.5, score MAE <= 0.12; boxes under
  0.25 may cross the threshold under quantization noise. Observed: all matched; score MAE
  0.018 (TFLite full-integer), 0.083 (OpenVINO NNCF PTQ: one photo's 0.99 box drops to 0.24),
  0.087 (Jetson Q/DQ ONNX on onnxruntime). Calibration: the same six photos.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import runtime_models as rm
import torch
from parity import CONF, TOLERANCES, assert_agree, match

from edge_yolo import Detector
from edge_yolo.runtime import BackendError, BundleError, Detections, processing
from edge_yolo.runtime.backends import get_backend

torch.set_num_threads(1)


# (target, precision, backend to run it on: None = the one the bundle names)
FAST = [("onnx", "fp32", None), ("intel", "fp32", None)]
SLOW = [
    ("intel", "fp16", None),
    ("intel", "int8", None),
    ("rpi", "fp32", None),
    ("rpi", "fp16", None),
    ("rpi", "int8", None),
    ("jetson", "fp16", "onnxruntime"),
    ("jetson", "int8", "onnxruntime"),
]
CASES = [pytest.param(*c, id=f"{c[0]}-{c[1]}") for c in FAST] + [
    pytest.param(*c, id=f"{c[0]}-{c[1]}", marks=pytest.mark.slow) for c in SLOW
]


@pytest.fixture(scope="session")
def root(tmp_path_factory):
    return rm.cache_root(tmp_path_factory)


@pytest.fixture(scope="session")
def images() -> list[np.ndarray]:
    """The six photos and their mirror images (different inputs, same scenes)."""
    photos = [processing.read_image(str(p)) for p in rm.raccoon_photos()]
    return photos + [np.ascontiguousarray(p[:, ::-1]) for p in photos]


@pytest.fixture(scope="session")
def reference(root, images) -> list[Detections]:
    det = Detector(rm.fitted_checkpoint(root), threads=1, conf=CONF)
    return [det(im) for im in images]


def _bundle(root, target: str, precision: str, backend: str | None):
    name = backend or {"onnx": "onnxruntime", "intel": "openvino", "rpi": "tflite"}[target]
    cls = get_backend(name)
    if not cls.available():
        pytest.skip(f"{target} {precision}: {cls.missing_message()}")
    try:
        return rm.exported_bundle(root, target, precision)
    except ModuleNotFoundError as e:  # an exporter library missing here, not a failure of ours
        if e.name and e.name.startswith("edge_yolo"):
            raise
        pytest.skip(f"{target} {precision} exporter needs the {e.name!r} package")


def test_greedy_matching_is_class_aware_and_one_to_one():
    box = np.array([[0, 0, 10, 10]], np.float32)
    a = Detections(
        np.repeat(box, 2, 0),
        np.array([0.9, 0.8], np.float32),
        np.array([0, 1]),
        ["a", "b"],
        (20, 20),
    )
    b = Detections(box, np.array([0.9], np.float32), np.array([1]), ["a", "b"], (20, 20))
    assert match(a, b, 0.5) == [(1, 0, 1.0)]  # the class-0 box may not take the class-1 one


@pytest.mark.parametrize(("target", "precision", "backend"), CASES)
def test_artifact_detections_match_torch(root, images, reference, target, precision, backend):
    bundle = _bundle(root, target, precision, backend)
    det = Detector(bundle, threads=1, conf=CONF, backend=backend)
    assert det.meta.precision == precision and det.names == reference[0].class_names
    got = [det(image) for image in images]
    print(assert_agree(reference, got, precision, f"{target}/{precision} on {det.backend.name}"))


@pytest.mark.parametrize(("target", "precision", "backend"), [c for c in FAST])
def test_fp32_raw_outputs_match_torch(root, images, target, precision, backend):
    """Below the detections: the canonical raw outputs themselves agree."""
    bundle = _bundle(root, target, precision, backend)
    det = Detector(bundle, threads=1, backend=backend)
    ref = Detector(rm.fitted_checkpoint(root), threads=1)
    blob = processing.to_blob([processing.letterbox(im, det.imgsz)[0] for im in images[:2]])
    want_box, want_cls = ref.backend.infer(blob)
    parts = [det.backend.infer(blob[i : i + 1]) for i in range(len(blob))]
    got_box = np.concatenate([p[0] for p in parts])
    got_cls = np.concatenate([p[1] for p in parts])
    assert got_box.dtype == np.float32 and got_box.shape == want_box.shape
    assert got_cls.shape == want_cls.shape
    sig = processing.sigmoid
    assert np.abs(sig(got_cls) - sig(want_cls)).max() < 1e-3
    np.testing.assert_allclose(got_box, want_box, atol=1e-2)


@pytest.mark.parametrize(("target", "precision", "backend"), [c for c in FAST])
def test_stream_gives_what_single_calls_give_in_order(root, images, target, precision, backend):
    """Detector.stream keeps images in flight (OpenVINO: asynchronous requests) and must still
    return each image's own detections, in order; stopping early leaves the detector usable."""
    det = Detector(_bundle(root, target, precision, backend), threads=1, conf=CONF,
                   backend=backend)
    want = [det(image) for image in images]
    items = list(enumerate(images))
    got = list(det.stream(items, image=lambda item: item[1], depth=3))
    assert [item[0] for item, _ in got] == list(range(len(images)))
    for w, (_, g) in zip(want, got):
        np.testing.assert_array_equal(g.xyxy, w.xyxy)
        np.testing.assert_array_equal(g.scores, w.scores)
    if det.backend.name == "openvino":
        assert det.backend.in_flight == 2
    early = det.stream(images)
    next(early)
    early.close()  # a caller that stops (q pressed, max_frames) with a request still running
    assert np.array_equal(det(images[0]).scores, want[0].scores)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_openvino_streams_two_frames_side_by_side_with_the_same_results(root, images, precision):
    """With 2 threads, Detector.stream runs OpenVINO's requests on a model compiled for two
    streams of one thread each (two frames infer at once): results stay bit-identical to
    single calls on the one-stream model, and single calls keep all threads on one frame."""
    det = Detector(_bundle(root, "intel", precision, None), threads=2, conf=CONF)
    want = [det(image) for image in images]
    got = [dets for _, dets in det.stream(images)]
    compiled, _ = det.backend._streamed()
    assert int(compiled.get_property("NUM_STREAMS")) == 2
    assert int(det.backend.compiled.get_property("NUM_STREAMS")) == 1
    assert int(det.backend.compiled.get_property("INFERENCE_NUM_THREADS")) == 2
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(g.xyxy, w.xyxy)
        np.testing.assert_array_equal(g.scores, w.scores)
        np.testing.assert_array_equal(g.class_ids, w.class_ids)
    assert sum(len(w) for w in want) > 0  # something was compared


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_tflite_streams_two_frames_on_two_interpreters_with_the_same_results(
    root, images, precision
):
    """With 2 threads, Detector.stream runs TFLite on two interpreters of one thread each,
    from two worker threads (two frames infer at once): the results stay bit-identical to
    single calls on the 2-thread interpreter, in order, with more in flight than lanes."""
    det = Detector(_bundle(root, "rpi", precision, None), threads=2, conf=CONF)
    want = [det(image) for image in images]
    assert det.backend.in_flight == 2
    got = [dets for _, dets in det.stream(images, depth=3)]
    lanes = det.backend._lanes
    assert lanes is not None and len(lanes) == 2 and lanes[0][1] is not lanes[1][1]
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(g.xyxy, w.xyxy)
        np.testing.assert_array_equal(g.scores, w.scores)
        np.testing.assert_array_equal(g.class_ids, w.class_ids)
    assert sum(len(w) for w in want) > 0  # something was compared


def test_threads_reach_each_runtime(root):
    onnx = Detector(_bundle(root, "onnx", "fp32", None), threads=1).backend
    assert onnx.session.get_session_options().intra_op_num_threads == 1
    ov = Detector(_bundle(root, "intel", "fp32", None), threads=1).backend
    assert int(ov.compiled.get_property("INFERENCE_NUM_THREADS")) == 1


# ---------------------------------------------------------------- damaged model files


def _cut(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize(
    ("target", "file", "error"),
    [
        pytest.param("onnx", "model.onnx", BackendError, id="onnx"),
        pytest.param("intel", "*.bin", BackendError, id="openvino-bin"),
        pytest.param("intel", "*.xml", BackendError, id="openvino-xml"),
        pytest.param("rpi", "*.tflite", BackendError, id="tflite", marks=pytest.mark.slow),
    ],
)
def test_truncated_model_file_is_refused_naming_it(root, tmp_path, target, file, error):
    bundle = _bundle(root, target, "fp32", None)
    copy = shutil.copytree(bundle, tmp_path / bundle.name)
    (victim,) = copy.glob(file)
    _cut(victim)
    with pytest.raises((BackendError, BundleError)) as e:
        Detector(copy, threads=1)
    msg = str(e.value)
    # An OpenVINO IR is one model in two files: naming the .xml of a cut .bin is fine.
    named = victim.name in msg or (victim.suffix == ".bin" and victim.stem + ".xml" in msg)
    assert named and ("truncated" in msg or "corrupt" in msg), msg
    assert len(msg) < 600 and "Traceback" not in msg


@pytest.mark.parametrize("target", ["onnx", "intel", pytest.param("rpi", marks=pytest.mark.slow)])
def test_lone_model_file_loads_from_its_embedded_metadata(root, tmp_path, images, target):
    bundle = _bundle(root, target, "fp32", None)
    ref = Detector(bundle, threads=1, conf=CONF)
    meta = ref.meta
    model_file = bundle / meta.model_file
    lone = tmp_path / model_file.name
    shutil.copy(model_file, lone)
    if lone.suffix == ".xml":
        shutil.copy(model_file.with_suffix(".bin"), lone.with_suffix(".bin"))
    det = Detector(lone, threads=1, conf=CONF)
    assert det.meta.names == meta.names and det.meta.imgsz == meta.imgsz
    a, b = ref(images[0]), det(images[0])
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)


# ---------------------------------------------------------------- TensorRT: pure parts here

from edge_yolo.runtime.backends import tensorrt as trt_backend  # noqa: E402

TRT_SKIP = "tensorrt not importable (needs an NVIDIA device: Jetson)"


def _key(**kw) -> trt_backend.EngineKey:
    base = dict(
        onnx_sha256="ab" * 32,
        tensorrt_version="10.3.0",
        gpu_name="Orin (nvgpu)",
        compute_capability=(8, 7),
        precision="fp16",
        max_batch=1,
    )
    return trt_backend.EngineKey(**{**base, **kw})


def test_engine_cache_key_changes_with_everything_an_engine_depends_on():
    base = _key()
    assert base.digest() == _key().digest()  # stable
    for change in (
        {"onnx_sha256": "cd" * 32},
        {"tensorrt_version": "10.4.0"},
        {"gpu_name": "Orin Nano"},
        {"compute_capability": (8, 6)},
        {"precision": "int8"},
        {"max_batch": 8},
    ):
        assert _key(**change).digest() != base.digest(), change
    name = base.file_name("model")
    assert name.startswith("model-trt10.3.0-orin-nvgpu-sm87-fp16-b1-") and name.endswith(".engine")
    assert "/" not in name and " " not in name


def test_engine_cache_path_beside_the_bundle_or_in_the_user_cache(tmp_path, monkeypatch):
    onnx = tmp_path / "bundle" / "model.onnx"
    onnx.parent.mkdir()
    onnx.write_bytes(b"\x08\x08")
    key = _key()
    assert trt_backend.engine_cache_path(onnx, key) == onnx.parent / "engines" / key.file_name(
        "model"
    )
    assert trt_backend.engine_cache_path(
        onnx, key, tmp_path / "c"
    ) == tmp_path / "c" / key.file_name("model")
    monkeypatch.setenv("EDGE_YOLO_ENGINE_CACHE", str(tmp_path / "env"))
    onnx.parent.chmod(0o555)  # read-only bundle (e.g. installed system-wide)
    try:
        if not os.access(onnx.parent, os.W_OK):  # root ignores the mode bits
            assert trt_backend.engine_cache_path(onnx, key) == tmp_path / "env" / key.file_name(
                "model"
            )
    finally:
        onnx.parent.chmod(0o755)
    monkeypatch.delenv("EDGE_YOLO_ENGINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert trt_backend.default_cache_dir() == tmp_path / "xdg" / "edge_yolo" / "engines"


def test_engine_written_atomically(tmp_path, monkeypatch):
    target = tmp_path / "engines" / "m.engine"
    trt_backend.atomic_write_bytes(target, b"old")

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(trt_backend.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        trt_backend.atomic_write_bytes(target, b"new engine")
    assert target.read_bytes() == b"old" and [p.name for p in target.parent.iterdir()] == [
        "m.engine"
    ]


def test_tensorrt_source_checks(tmp_path, root):
    with pytest.raises(BackendError, match="no such ONNX model file"):
        trt_backend.check_onnx_source(tmp_path / "model.onnx")
    with pytest.raises(BackendError, match="builds engines from ONNX"):
        trt_backend.check_onnx_source(tmp_path / "model.tflite")
    fake = tmp_path / "fake.onnx"
    fake.write_text("<xml/>")
    with pytest.raises(BackendError, match="fake.onnx: not an ONNX model"):
        trt_backend.check_onnx_source(fake)
    real = _bundle(root, "onnx", "fp32", None) / "model.onnx"
    trt_backend.check_onnx_source(real)  # a real export passes
    with pytest.raises(BackendError, match="no such TensorRT engine file"):
        trt_backend.check_onnx_source(tmp_path / "m.engine")
    assert trt_backend._gpu_index("cuda:1") == 1 and trt_backend._gpu_index(None) == 0
    with pytest.raises(BackendError, match="cuda or cuda:N"):
        trt_backend._gpu_index("cpu")


def test_lone_engine_needs_the_bundle_metadata(tmp_path, root):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\x00")
    with pytest.raises(BundleError, match="carries no edge-yolo metadata"):
        trt_backend.TensorRTBackend.read_metadata(engine)
    bundle = shutil.copytree(_bundle(root, "onnx", "fp32", None), tmp_path / "b")
    (bundle / "engines").mkdir()
    cached = bundle / "engines" / "model.engine"
    cached.write_bytes(b"\x00")
    assert trt_backend.TensorRTBackend.read_metadata(cached).names == ["raccoon"]


def test_raw_outputs_come_back_in_canonical_layout():
    x = np.arange(2 * 5 * 3, dtype=np.float16).reshape(2, 5, 3)  # (B, A, C) from an engine
    out = trt_backend._canonical(x, 3)
    assert out.dtype == np.float32 and out.shape == (2, 3, 5)
    np.testing.assert_array_equal(out, x.transpose(0, 2, 1))


@pytest.mark.skipif(not trt_backend.TensorRTBackend.available(), reason=TRT_SKIP)
def test_tensorrt_engine_builds_caches_and_matches_onnxruntime(root, images, tmp_path):
    # DEVICE-ONLY: runs on a Jetson (or any NVIDIA GPU with tensorrt + cuda-python installed).
    bundle = _bundle(root, "jetson", "fp16", "onnxruntime")
    ref = Detector(bundle, threads=1, conf=CONF, backend="onnxruntime")
    det = Detector(bundle, conf=CONF, backend="tensorrt")
    engine = det.backend.engine_path
    assert engine.is_file()
    built = engine.stat().st_mtime_ns
    again = Detector(bundle, conf=CONF, backend="tensorrt")  # reuses the cached engine
    assert again.backend.engine_path == engine and engine.stat().st_mtime_ns == built
    tol = TOLERANCES["fp16"]
    for image in images:
        a, b = ref(image), det(image)
        assert len(match(a, b, tol.min_iou)) >= tol.matched * len(a)
