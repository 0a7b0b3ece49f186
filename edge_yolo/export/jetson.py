"""``jetson`` target: ONNX for TensorRT, which builds the engine on the device.

- fp32 / fp16: the plain FP32 ONNX (``trtexec --fp16`` builds the FP16 engine from it; the
  metadata says which precision the engine is meant to be built in).
- int8: explicit Q/DQ ONNX (symmetric int8, zero point 0, per-channel weights on axis 0,
  per-tensor activations, BN already folded by fusing, standard ``QuantizeLinear`` /
  ``DequantizeLinear`` only), quantized with onnxruntime (see :mod:`edge_yolo.quant.ptq` for
  why). TensorRT 10 deprecates implicit INT8 calibration; explicit Q/DQ works on 8.6 and 10.
  From a QAT checkpoint (``edge-yolo qat --target jetson``) the Q/DQ pairs are NNCF's, with
  the learned ranges. Either way :func:`edge_yolo.quant.qat_export.check_tensorrt_qdq` checks the
  form before the bundle is written.

TensorRT engines are specific to a GPU and a TensorRT version, so the bundle ships the ONNX
and the ``trtexec`` line; the runtime's tensorrt backend builds and caches the engine on the
Jetson. Off the device, ``Detector(bundle, backend="onnxruntime")`` runs the same file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..contract import INPUT_NAME, OUTPUT_NAMES
from ..runtime.bundle import BundleMeta
from .base import Artifact, Exporter
from .job import ExportJob
from .onnx import check, embed_onnx_metadata, opset_of, torch_to_onnx

MODEL_FILE = "model.onnx"


@dataclass
class JetsonOptions:
    """Extras of the ``jetson`` target."""

    calibrate_method: str = "minmax"  # minmax | percentile | entropy (int8)
    nodes_to_exclude: list[str] = field(default_factory=list)  # Conv nodes kept in float (int8)
    workspace_mib: int = 2048  # trtexec memPoolSize for the README line


def trtexec_command(meta: BundleMeta, workspace_mib: int = 2048) -> str:
    """The ``trtexec`` line that builds this bundle's engine on the Jetson."""
    flags = {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8", "--fp16"]}[meta.precision]
    h, w = meta.imgsz
    shape = []
    if meta.inputs and meta.inputs[0].shape[0] == -1:
        shape = [f"--shapes={INPUT_NAME}:1x3x{h}x{w}"]
    return " ".join([
        "/usr/src/tensorrt/bin/trtexec",
        f"--onnx={meta.model_file}",
        "--saveEngine=model.engine",
        *flags,
        *shape,
        f"--memPoolSize=workspace:{workspace_mib}M",
    ])


class JetsonExporter(Exporter):
    options_type = JetsonOptions

    def build(self, job: ExportJob, staging: Path) -> Artifact:
        import onnx

        opts: JetsonOptions = job.target_options
        inputs, outputs = job.float_io()
        extra: dict[str, object] = {
            "engine_precision": job.precision,
            "engine": "built on the device (TensorRT engines are not portable)",
        }
        path = staging / MODEL_FILE
        if job.precision == "int8" and job.qat is not None:
            from ..quant.qat_export import check_tensorrt_qdq, export_qdq_onnx

            export_qdq_onnx(job.model, job.example_input(), path, opset=job.opset,
                            input_name=INPUT_NAME, output_names=OUTPUT_NAMES,
                            dynamic=job.dynamic)
            qdq = onnx.load(str(path))
            check(qdq)
            extra["opset"] = opset_of(qdq)
            extra["qdq"] = {"format": "QDQ", "library": "nncf (QAT, learned ranges)",
                            **check_tensorrt_qdq(qdq)}
            extra["qdq_nodes"] = sum(
                n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in qdq.graph.node
            )
            return Artifact(MODEL_FILE, inputs, outputs, "qdq", extra=extra)
        model = torch_to_onnx(job)
        extra["opset"] = opset_of(model)
        if job.precision == "int8":
            from ..quant.ptq import quantize_qdq_onnx
            from ..quant.qat_export import check_tensorrt_qdq
            from ..quant.sensitivity import onnx_nodes

            settings = quantize_qdq_onnx(
                model,
                job.calibration(),
                job.imgsz,
                path,
                input_name=INPUT_NAME,
                calibrate_method=opts.calibrate_method,
                nodes_to_exclude=[*opts.nodes_to_exclude, *onnx_nodes(model, job.float_blocks)],
            )
            qdq = onnx.load(str(path))
            settings.update(check_tensorrt_qdq(qdq))  # the form TensorRT needs, checked
            extra["qdq"] = settings
            extra["qdq_nodes"] = sum(
                n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in qdq.graph.node
            )
            return Artifact(MODEL_FILE, inputs, outputs, "qdq", extra=extra)
        onnx.save(model, str(path))
        return Artifact(MODEL_FILE, inputs, outputs, "none", extra=extra)

    def embed_metadata(self, model_path: Path, meta: BundleMeta) -> None:
        embed_onnx_metadata(model_path, meta)

    def readme_section(self, meta: BundleMeta, job: ExportJob) -> str:
        opts: JetsonOptions = job.target_options
        what = {
            "fp32": "an FP32 engine",
            "fp16": "an FP16 engine from the FP32 ONNX",
            "int8": "an INT8 engine from the explicit Q/DQ ONNX (`--fp16` lets the layers "
                    "left in float run in FP16)",
        }[meta.precision]
        return "\n".join([
            "## Build the TensorRT engine on the Jetson",
            f"On the Jetson, `Detector(bundle)` has TensorRT build {what}. The equivalent "
            "`trtexec` command (an engine only runs on the GPU model and TensorRT version "
            "that built it):",
            "```",
            trtexec_command(meta, opts.workspace_mib),
            "```",
            "Off the Jetson, the same file runs on onnxruntime: "
            '`Detector(bundle, backend="onnxruntime")`.',
        ])
