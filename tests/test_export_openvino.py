"""``intel`` target: OpenVINO IR FP32 / FP16 / INT8 (NNCF) and the openvino backend."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
torch = pytest.importorskip("torch")

from export_helpers import RACCOON_IMAGES, textured_checkpoint  # noqa: E402

from edge_yolo import Detector  # noqa: E402
from edge_yolo.export import ExportError, export  # noqa: E402
from edge_yolo.quant.calibration import sha256_images  # noqa: E402
from edge_yolo.quant.ptq import resolve_overflow_fix  # noqa: E402
from edge_yolo.runtime.backends import BackendError, get_backend  # noqa: E402
from edge_yolo.runtime.backends import read_metadata as read_embedded  # noqa: E402
from edge_yolo.runtime.bundle import META_KEY, BundleMeta  # noqa: E402
from edge_yolo.runtime.cpu import cpu_has_vnni  # noqa: E402

IMGSZ = 64


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return textured_checkpoint(tmp_path_factory.mktemp("ckpt") / "t.pt", IMGSZ)


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return tmp_path_factory.mktemp("out")


@pytest.fixture(scope="module")
def fp32(ckpt, out) -> Path:
    return export(ckpt, "intel", precision="fp32", imgsz=IMGSZ, calib=str(RACCOON_IMAGES),
                  out=out, threads=1)


def test_fp32_bundle_matches_torch_and_embeds_metadata(fp32):
    meta = BundleMeta.read(fp32)
    assert (meta.backend, meta.quantization, meta.model_file) == ("openvino", "none", "model.xml")
    assert (fp32 / "model.bin").is_file()
    assert meta.accuracy["measured_with"] == "openvino"
    assert meta.accuracy["dist_max_abs_diff"] <= 1e-3  # f32 inference, not bf16
    assert meta.accuracy["top_class_agreement"] == 1.0
    embedded = read_embedded(fp32 / "model.xml")
    # all but the file checksums, which only the bundle's JSON can hold
    assert embedded.to_dict() == {**json.loads((fp32 / "edge_yolo.json").read_text()), "files": {}}
    model = ov.Core().read_model(str(fp32 / "model.xml"))
    assert model.has_rt_info([META_KEY])
    assert list(model.inputs[0].get_partial_shape().to_shape()) == [1, 3, IMGSZ, IMGSZ]
    assert not any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


def test_backend_reproduces_the_references(fp32):
    meta = BundleMeta.read(fp32)
    ref = np.load(fp32 / "reference.npz")
    backend = get_backend("openvino")(fp32 / "model.xml", meta, threads=1)
    box, cls = backend.infer(ref["images"])
    np.testing.assert_allclose(box, ref["box_dist"], atol=1e-5)
    np.testing.assert_allclose(cls, ref["cls_logits"], atol=1e-5)
    assert box.dtype == np.float32 and box.shape == (2, 64, meta.outputs[0].shape[2])


def test_lone_xml_runs_in_the_detector(fp32, tmp_path):
    from edge_yolo.runtime.detector import Detector

    for name in ("model.xml", "model.bin"):
        (tmp_path / name).write_bytes((fp32 / name).read_bytes())
    det = Detector(tmp_path / "model.xml", threads=1)
    assert det.backend.name == "openvino" and det.names == ["raccoon", "dog", "cat"]
    image = np.full((48, 80, 3), 90, np.uint8)
    assert det(image).image_shape == (48, 80)


def test_tampered_weights_raise_backend_error_naming_the_file(fp32, tmp_path):
    meta = BundleMeta.read(fp32)
    (tmp_path / "model.xml").write_bytes((fp32 / "model.xml").read_bytes())
    data = (fp32 / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(BackendError, match=str(tmp_path / "model.xml")):
        get_backend("openvino")(tmp_path / "model.xml", meta, threads=1)
    (tmp_path / "model.xml").write_text("<net><layers>")
    with pytest.raises(BackendError, match="cannot read"):
        get_backend("openvino")(tmp_path / "model.xml", meta, threads=1)


def test_fp16_compresses_weights_only_when_asked(ckpt, out, fp32):
    fp16 = export(ckpt, "intel", precision="fp16", imgsz=IMGSZ, calib=str(RACCOON_IMAGES),
                  out=out, threads=1)
    meta = BundleMeta.read(fp16)
    assert meta.quantization == "fp16-weights" and meta.precision == "fp16"
    ratio = (fp16 / "model.bin").stat().st_size / (fp32 / "model.bin").stat().st_size
    assert 0.45 < ratio < 0.55
    assert meta.accuracy["dist_max_abs_diff"] < 0.05
    # the rt_info round trip did not re-compress or decompress anything
    model = ov.Core().read_model(str(fp16 / "model.xml"))
    assert any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f16
               for op in model.get_ops())


def test_bf16_bundle_computes_in_bf16_where_the_cpu_has_it(ckpt, out, fp32, raccoon_images):
    from edge_yolo.runtime.cpu import cpu_flags
    from edge_yolo.runtime.verify import verify_bundle

    bf16 = export(ckpt, "intel", precision="bf16", imgsz=IMGSZ, out=out, threads=1)
    meta = BundleMeta.read(bf16)
    assert (meta.precision, meta.quantization) == ("bf16", "none")
    assert meta.extra["inference_precision_hint"] == "bf16"
    det = Detector(bf16, threads=1, conf=0.1)
    has_bf16 = bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    assert det.backend.compute_precision == ("bf16" if has_bf16 else "f32")
    assert f"intel/bf16 on openvino ({det.backend.compute_precision} compute)" in repr(det)
    assert Detector(fp32, threads=1).backend.compute_precision == "f32"  # exact parity kept
    acc = meta.accuracy
    # A mean over the export's few check images: under 0.01 before, 0.0103 after the area
    # resize by halvings moved some pixels by rounding. The detection parity check below is
    # the one that counts; this bound only catches a bundle far worse than bf16.
    assert acc["score_mean_abs_diff"] < 0.02 and acc["top_class_agreement"] > 0.95
    if has_bf16:  # really computed in bf16: not bit-identical to the float model
        assert acc["score_max_abs_diff"] > 1e-5
    assert verify_bundle(bf16, threads=1).ok
    from parity import assert_agree

    float_det = Detector(fp32, threads=1, conf=0.1)
    photos = [str(p) for p in raccoon_images]
    # bf16 keeps about as much of each value as fp16: the same parity rules
    assert_agree([float_det(p) for p in photos], [det(p) for p in photos], "fp16", "bf16")


def test_int8_needs_calibration_images(ckpt, tmp_path):
    with pytest.raises(ExportError, match="pass calib=.DATA."):
        export(ckpt, "intel", precision="int8", imgsz=IMGSZ, out=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.mark.slow
def test_int8_nncf_bundle(ckpt, out):
    int8 = export(ckpt, "intel", precision="int8", imgsz=IMGSZ, calib=str(RACCOON_IMAGES),
                  calib_size=4, out=out, threads=1)
    meta = BundleMeta.read(int8)
    assert (meta.precision, meta.quantization) == ("int8", "qdq")
    calib = meta.calibration
    assert calib.dataset == str(RACCOON_IMAGES) and calib.num_images == 4
    from edge_yolo.data.formats import load_images

    assert calib.sha256 == sha256_images(load_images(str(RACCOON_IMAGES), 4))
    assert meta.extra["overflow_fix"] == ("disable" if cpu_has_vnni() else "enable")
    assert meta.extra["fake_quantize_nodes"] > 100
    model = ov.Core().read_model(str(int8 / "model.xml"))
    assert sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops()) > 100
    convs = [op for op in model.get_ops() if op.get_type_name() == "Convolution"]
    for conv in convs:  # weights stored as int8 and dequantized per output channel
        mul = conv.input_value(1).get_node()
        assert mul.get_type_name() == "Multiply", conv.get_friendly_name()
        w, scale = (tuple(mul.input_value(i).get_partial_shape().to_shape()) for i in range(2))
        assert scale == (w[0], 1, 1, 1)
        node = mul.input_value(0).get_node()
        while node.get_type_name() != "Constant":
            node = node.input_value(0).get_node()
        assert node.get_element_type() == ov.Type.i8
    assert "Convolution" in meta.extra["quantized"]
    acc = meta.accuracy
    assert acc["score_mean_abs_diff"] < 0.05 and acc["top_class_agreement"] > 0.8
    assert acc["score_max_abs_diff"] > 0  # it really is quantized
    assert "calibration" in (int8 / "README.md").read_text()
    # references computed by the int8 artifact reproduce
    ref = np.load(int8 / "reference.npz")
    box, cls = get_backend("openvino")(int8 / "model.xml", meta, threads=1).infer(ref["images"])
    np.testing.assert_allclose(cls, ref["cls_logits"], atol=1e-4)


def test_checkpoint_dataset_is_the_default_calibration_source(tmp_path):
    from edge_yolo.export.base import ExportJob, ExportOptions
    from edge_yolo.export.targets import resolve

    ckpt = textured_checkpoint(tmp_path / "c.pt", IMGSZ, data=str(RACCOON_IMAGES))
    spec, precision, device = resolve("intel", "int8")
    job = ExportJob(ExportOptions("intel", "int8", calib_size=3), spec, precision, device, ckpt,
                    None)
    assert job.calib_source == str(RACCOON_IMAGES)
    blobs = list(job.calibration().blobs(IMGSZ))
    assert len(blobs) == 3 and blobs[0].shape == (1, 3, IMGSZ, IMGSZ)
    provenance = job.calibration_provenance
    assert provenance.num_images == 3 and len(provenance.sha256) == 64
    assert provenance.split == "train" and provenance.requested == 3


@pytest.mark.parametrize(
    ("flags", "setting", "want"),
    [
        ("fpu sse avx2 avx512f", "auto", "enable"),
        ("fpu avx2 avx_vnni", "auto", "disable"),
        ("fpu avx512f avx512_vnni", "auto", "disable"),
        ("fpu avx2", "disable", "disable"),
        ("fpu avx512_vnni", "enable", "enable"),
    ],
)
def test_overflow_fix_follows_vnni(tmp_path, flags, setting, want):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert resolve_overflow_fix(setting, cpuinfo) == want


@pytest.mark.parametrize(
    ("isa", "want"),
    [("ALL", True), ("AVX2", False), ("avx512_core", False), ("AVX2_VNNI", True),
     ("AVX512_CORE_VNNI", True), ("AVX512_CORE_AMX", True)],
)
def test_a_onednn_isa_below_vnni_counts_as_no_vnni(tmp_path, monkeypatch, isa, want):
    """ONEDNN_MAX_CPU_ISA caps the kernels OpenVINO's CPU plugin uses (how this suite runs a
    VNNI machine as an AVX2-only one): below VNNI, int8 convolutions add in 16 bits."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert cpu_has_vnni(cpuinfo) is want
    assert resolve_overflow_fix("auto", cpuinfo) == ("disable" if want else "enable")


@pytest.mark.parametrize(
    ("precision", "fix", "vnni", "warns"),
    [("int8", "disable", False, True), ("int8", "first_layer_only", False, True),
     ("int8", "disable", True, False), ("int8", "enable", False, False),
     ("int8", None, False, False), ("fp32", None, False, False)],
)
def test_int8_saturation_risk_is_named_where_the_cpu_lacks_vnni(precision, fix, vnni, warns):
    from types import SimpleNamespace

    from edge_yolo.runtime.cpu import int8_saturation_risk

    extra = {} if fix is None else {"overflow_fix": fix}
    why = int8_saturation_risk(SimpleNamespace(precision=precision, extra=extra), vnni)
    assert (why is not None) is warns
    if warns:
        assert "--overflow-fix enable" in why and repr(fix) in why


@pytest.mark.slow
def test_an_int8_bundle_without_the_overflow_fix_is_named_on_a_cpu_without_vnni(ckpt, tmp_path):
    """The same model quantized with and without NNCF's overflow fix, verified on this CPU
    capped at AVX2 (no VNNI): the one without the fix is named as at risk, by verify and in
    its README; the one with it computes its references to the bit."""
    import os
    import subprocess
    import sys

    bundles = {}
    for fix in ("disable", "enable"):
        bundles[fix] = export(ckpt, "intel", precision="int8", imgsz=IMGSZ,
                              calib=str(RACCOON_IMAGES), calib_size=4, out=tmp_path / fix,
                              threads=1, target_options={"overflow_fix": fix})
        assert BundleMeta.read(bundles[fix]).extra["overflow_fix"] == fix
    assert "--overflow-fix enable" in (bundles["disable"] / "README.md").read_text()
    assert "--overflow-fix enable" not in (bundles["enable"] / "README.md").read_text()
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = {}
    for fix, bundle in bundles.items():
        proc = subprocess.run([sys.executable, "-m", "edge_yolo", "verify", str(bundle),
                               "--threads", "1"], capture_output=True, text=True, env=env)
        out[fix] = (proc.returncode, proc.stdout)
    assert "this CPU has none" in out["disable"][1] and "'disable'" in out["disable"][1]
    assert out["enable"][0] == 0 and "why it may differ" not in out["enable"][1]
    assert "score max |diff| 0.00e+00" in out["enable"][1]  # the same kernels' sums, exact


def test_overflow_fix_refuses_unknown_setting():
    with pytest.raises(ValueError, match="overflow_fix"):
        resolve_overflow_fix("sometimes")


def test_checkpoint_hash_recorded(fp32, ckpt):
    assert BundleMeta.read(fp32).source_checkpoint_sha256 == hashlib.sha256(
        ckpt.read_bytes()
    ).hexdigest()


def test_the_runtime_normalizes_uint8_images_as_the_float_blob_does(fp32, raccoon_images):
    """The Detector hands OpenVINO the letterboxed uint8 images (the graph converts them):
    the same outputs as the float blob the other backends get."""
    from edge_yolo.runtime import processing

    det = Detector(fp32, threads=1)
    assert det.backend.takes_uint8
    boxed = [processing.letterbox(processing.read_image(p), det.imgsz)[0]
             for p in raccoon_images[:2]]
    from_u8 = det.backend.infer(np.stack(boxed))
    from_float = det.backend.infer(processing.to_blob(boxed))
    for a, b in zip(from_u8, from_float):
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-3
