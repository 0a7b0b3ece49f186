"""``jetson`` target: plain ONNX for an FP16 engine, explicit Q/DQ ONNX for INT8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from export_helpers import RACCOON_IMAGES, textured_checkpoint  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from edge_yolo.export import export  # noqa: E402
from edge_yolo.runtime.bundle import BundleMeta  # noqa: E402

IMGSZ = 64
STANDARD_DOMAINS = {"", "ai.onnx"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return textured_checkpoint(tmp_path_factory.mktemp("ckpt") / "t.pt", IMGSZ)


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return tmp_path_factory.mktemp("out")


@pytest.fixture(scope="module")
def fp16(ckpt, out) -> Path:
    return export(ckpt, "jetson", precision="fp16", imgsz=IMGSZ, calib=str(RACCOON_IMAGES),
                  out=out, threads=1)


@pytest.fixture(scope="module")
def int8(ckpt, out) -> Path:
    return export(ckpt, "jetson", precision="int8", imgsz=IMGSZ, calib=str(RACCOON_IMAGES),
                  calib_size=6, out=out, threads=1)


def test_fp16_bundle_is_plain_onnx_for_tensorrt(fp16):
    meta = BundleMeta.read(fp16)
    assert (meta.target, meta.precision, meta.backend, meta.quantization) == (
        "jetson", "fp16", "tensorrt", "none"
    )
    assert meta.accuracy["measured_with"] == "onnxruntime"
    assert meta.accuracy["dist_max_abs_diff"] <= 1e-3
    proto = onnx.load(str(fp16 / "model.onnx"))
    assert {n.op_type for n in proto.graph.node}.isdisjoint({"QuantizeLinear", "DequantizeLinear"})
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in proto.graph.initializer
               if t.dims and len(t.dims) == 4)
    readme = (fp16 / "README.md").read_text()
    assert "trtexec --onnx=model.onnx --saveEngine=model.engine --fp16" in readme
    assert "--int8" not in readme and "JetPack" in readme


def test_detector_runs_a_tensorrt_bundle_on_onnxruntime(fp16):
    from edge_yolo.runtime.detector import Detector

    det = Detector(fp16, backend="onnxruntime", threads=1)
    assert det.backend.name == "onnxruntime" and det.meta.backend == "tensorrt"
    image = np.full((60, 90, 3), 128, np.uint8)
    assert det(image).image_shape == (60, 90)


def _qdq_graph(path: Path):
    proto = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    return proto, inits


def test_int8_qdq_form(int8):
    proto, inits = _qdq_graph(int8 / "model.onnx")
    onnx.checker.check_model(proto, full_check=True)
    nodes = proto.graph.node
    q = [n for n in nodes if n.op_type == "QuantizeLinear"]
    dq = [n for n in nodes if n.op_type == "DequantizeLinear"]
    assert q and dq
    # standard ops only: no custom domains, no FakeQuantize-style ops
    assert {n.domain for n in nodes} <= STANDARD_DOMAINS
    assert {o.domain for o in proto.opset_import} <= STANDARD_DOMAINS
    convs = [n for n in nodes if n.op_type == "Conv"]
    weight_dqs = [n for n in dq if n.input[0] in inits and inits[n.input[0]].ndim == 4]
    assert len(weight_dqs) == len(convs)  # every conv weight quantized (BN folded: no BN)
    assert "BatchNormalization" not in {n.op_type for n in nodes}
    for n in q + dq:
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), f"{n.name}: zero point {zp}"
    for n in weight_dqs:
        w, scale = inits[n.input[0]], inits[n.input[1]]
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        assert w.dtype == np.int8 and axis == 0
        assert scale.shape == (w.shape[0],), f"{n.name}: per-channel scale {scale.shape}"
        assert np.abs(w).max() <= 127  # symmetric: -128 unused
    activation = [n for n in q + dq if n not in weight_dqs]
    assert activation
    for n in activation:
        assert inits[n.input[1]].ndim == 0, f"{n.name}: activation scale is not per-tensor"
    # each conv reads a dequantized activation and dequantized weights
    produced_by = {o: n for n in nodes for o in n.output}
    for conv in convs:
        assert produced_by[conv.input[0]].op_type == "DequantizeLinear"
        assert produced_by[conv.input[1]].op_type == "DequantizeLinear"
    # biases stay float, outputs stay float
    out_types = [o.type.tensor_type.elem_type for o in proto.graph.output]
    assert out_types == [onnx.TensorProto.FLOAT] * 2


def test_int8_metadata_and_agreement(int8):
    meta = BundleMeta.read(int8)
    assert (meta.precision, meta.quantization, meta.backend) == ("int8", "qdq", "tensorrt")
    assert meta.calibration.num_images == 6 and meta.calibration.dataset == str(RACCOON_IMAGES)
    assert meta.extra["qdq"]["library"].startswith("onnxruntime")
    acc = meta.accuracy
    assert 0 < acc["score_mean_abs_diff"] < 0.02 and acc["top_class_agreement"] > 0.9
    readme = (int8 / "README.md").read_text()
    assert "trtexec --onnx=model.onnx --saveEngine=model.engine --int8 --fp16" in readme


def test_int8_detections_agree_with_fp32(int8, fp16):
    import cv2

    from edge_yolo.runtime.detector import Detector

    q = Detector(int8, backend="onnxruntime", threads=1)
    f = Detector(fp16, backend="onnxruntime", threads=1)
    matched = total = 0
    for path in sorted(RACCOON_IMAGES.glob("*.jpg"))[:3]:
        image = cv2.imread(str(path))
        dq, df = q(image), f(image)
        assert len(df) > 0
        assert abs(len(dq) - len(df)) <= max(2, len(df) // 4)
        for box, score in zip(df.xyxy[:5], df.scores[:5]):
            ious = _iou(box, dq.xyxy)
            total += 1
            if ious.size and ious.max() > 0.7:
                matched += 1
                assert abs(dq.scores[ious.argmax()] - score) < 0.1
    assert matched / total >= 0.7


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    if len(boxes) == 0:
        return np.zeros(0)
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), 1)
    area = lambda b: np.prod(b[..., 2:] - b[..., :2], -1)  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


def test_board_profile_drives_the_export(ckpt, tmp_path):
    path = export(ckpt, "jetson-orin-nano", precision="fp16", imgsz=IMGSZ, out=tmp_path,
                  threads=1, num_references=1, agreement_images=1)
    meta = BundleMeta.read(path)
    # named for the board: two boards' exports never replace each other
    assert path.name == "gelan-t-jetson-orin-nano-fp16"
    assert meta.extra["device"] == "jetson-orin-nano"
    assert meta.extra["device_threads"] == 2
    readme = (path / "README.md").read_text()
    assert "python3-libnvinfer" in readme and "jetson_clocks" in readme
