"""``onnx`` target: plain FP32 ONNX for onnxruntime anywhere (also the base of ``jetson``).

The graph comes from the torch.export-based ONNX exporter (``dynamo=True``) at its native
opset 18: on torch 2.13 the TorchScript exporter is deprecated and leaves
Shape/Gather/Slice/Identity chains for onnxslim to clean up, while torch.export yields the
minimal graph directly (Conv, Sigmoid, Mul, Add, Concat, Split, Reshape, pools, Resize).
Asking it for opset 17 is not an option: its down-conversion keeps opset-18 ``Split``
attributes and the result fails ``onnx.checker``. So ``opset=17`` (for TensorRT 8.x parsers,
JetPack 5) uses the TorchScript exporter, which emits opset 17 natively. onnxslim runs on
both, and ``onnx.checker`` with full shape inference must pass.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..contract import INPUT_NAME, OUTPUT_NAMES
from ..runtime.bundle import META_KEY, BundleMeta
from .base import Artifact, Exporter, ExportError
from .job import ExportJob

if TYPE_CHECKING:
    import onnx

MODEL_FILE = "model.onnx"


def torch_to_onnx(job: ExportJob) -> onnx.ModelProto:
    """The job's fused float model as a checked (and, if asked, simplified) ONNX model."""
    import onnx
    import torch

    # torch.export specialises a dimension whose example size is 1: trace dynamic with 2
    example = job.example_input(2 if job.dynamic else 1)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=256)},) if job.dynamic else None
    dynamic_axes = {n: {0: "batch"} for n in (INPUT_NAME, *OUTPUT_NAMES)} if job.dynamic else None
    # The exporter prints progress to stdout and warns about its own internals; keep the
    # CLI's output to the bundle path and real problems.
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            if job.opset >= 18:
                program = torch.onnx.export(
                    job.model,
                    (example,),
                    None,
                    input_names=[INPUT_NAME],
                    output_names=list(OUTPUT_NAMES),
                    opset_version=job.opset,
                    dynamo=True,
                    dynamic_shapes=dynamic_shapes,
                    optimize=True,
                )
                model = program.model_proto
            else:
                buffer = io.BytesIO()
                torch.onnx.export(
                    job.model,
                    (example,),
                    buffer,
                    input_names=[INPUT_NAME],
                    output_names=list(OUTPUT_NAMES),
                    opset_version=job.opset,
                    dynamo=False,
                    dynamic_axes=dynamic_axes,
                )
                model = onnx.load_from_string(buffer.getvalue())
    except Exception as e:
        raise ExportError(f"torch -> ONNX export of {job.model_name} failed: {e}") from e
    finally:
        quiet.setLevel(level)
    if job.simplify:
        model = simplify(model)
    model.producer_name = "edge-yolo"
    check(model)
    got = [o.name for o in model.graph.output]
    if got != list(OUTPUT_NAMES):
        raise ExportError(f"exported ONNX outputs are {got}, expected {list(OUTPUT_NAMES)}")
    return model


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    with contextlib.redirect_stdout(io.StringIO()):
        return onnxslim.slim(model)


def check(model: onnx.ModelProto) -> None:
    """onnx.checker with full shape inference; raises ExportError with the checker's reason."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"exported ONNX model fails onnx.checker: {e}") from e


def opset_of(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def embed_onnx_metadata(model_path: Path, meta: BundleMeta) -> None:
    """Put the bundle metadata in the file's ``metadata_props`` under META_KEY."""
    import onnx

    model = onnx.load(str(model_path))
    props = [p for p in model.metadata_props if p.key != META_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, meta.to_json()
    onnx.save(model, str(model_path))


class OnnxExporter(Exporter):
    """Plain FP32 ONNX, static input shape unless ``dynamic``."""

    def build(self, job: ExportJob, staging: Path) -> Artifact:
        import onnx

        model = torch_to_onnx(job)
        onnx.save(model, str(staging / MODEL_FILE))
        inputs, outputs = job.float_io()
        return Artifact(
            model_file=MODEL_FILE,
            inputs=inputs,
            outputs=outputs,
            quantization="none",
            extra={"opset": opset_of(model), "exporter": "torch.onnx (torch.export)",
                   "simplified": job.simplify},
        )

    def embed_metadata(self, model_path: Path, meta: BundleMeta) -> None:
        embed_onnx_metadata(model_path, meta)
