"""``rpi`` target: TFLite (LiteRT) FP32, FP16 weights and full-integer INT8, without TensorFlow.

The fused export form is converted by litert-torch (PyTorch -> StableHLO -> TFLite) behind a thin
wrapper that gives the file an NHWC input named ``images`` (what XNNPACK and every TFLite
delegate run natively; the wrapper's permute cancels against the converter's own NCHW->NHWC
rewrite, so the graph gains no transpose) and a signature whose outputs are named
``box_dist`` and ``cls_logits``. Precisions:

* ``fp32``: the converter's output as is.
* ``fp16``: float16 conv weights (each followed by a DEQUANTIZE op); activations and
  arithmetic stay float32 ("fp16-weights").
* ``int8``: static quantization, int8 weights (per channel) and int8 activations (per
  tensor), calibrated on real images letterboxed exactly as the runtime does. Input and both
  outputs are int8 too ("full-integer"), the input range pinned to exactly [0, 1]. From a
  QAT checkpoint, the converter gets the QAT-adapted weights baked onto their int8 grid
  (:func:`edge_yolo.quant.qat_export.bake_weights`) and quantizes them the same way: per-channel
  symmetric scales put the fine-tuned values back on (nearly) the grid they were trained on;
  every activation tensor that a QAT quantizer covers takes its learned range (found by value:
  tensor names do not survive the conversion), and only the others are calibrated.

Both quantizations are ai-edge-quantizer's, driven from :mod:`edge_yolo.quant.ptq`; this
module converts, checks and packages.

The bundle metadata is embedded in the ``.tflite`` under the model-metadata key ``edge_yolo``,
so a lone file still loads (:meth:`edge_yolo.runtime.backends.tflite.TFLiteBackend.read_metadata`).
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..contract import INPUT_NAME, OUTPUT_NAMES
from ..errors import option
from ..fileio import atomic_write_bytes
from ..quant.ptq import TFLITE_RANGES, quantize_tflite_fp16_weights, quantize_tflite_full_integer
from ..quant.sensitivity import tflite_regexes
from ..runtime.bundle import META_KEY, BundleMeta, TensorSpec
from .base import Artifact, Exporter, ExportError, options_dict
from .job import ExportJob
from .targets import TargetError

if TYPE_CHECKING:
    from torch import nn

LOGGER = logging.getLogger(__name__)

SIGNATURE = "serving_default"
QUANTIZATION = {"fp32": "none", "fp16": "fp16-weights", "int8": "full-integer"}
_ALIGN = 16  # TFLite aligns tensor buffers to 16 bytes; keep that when rewriting a file


@dataclass
class TFLiteOptions:
    """Options of the ``rpi`` target."""

    #: pin the int8 input range to [0, 1] (scale 1/255, zero point -128: pixels enter exactly);
    #: False keeps the calibrated range, which clips the brightest pixels of unseen images.
    exact_input_range: bool = True
    #: activation-range aggregation over the calibration set: "minmax" or "moving-average"
    calib_ranges: str = "minmax"
    #: threads of the calibration interpreter (None: all cores)
    calib_threads: int | None = None
    #: from a QAT checkpoint: activation tensors take the ranges QAT learned (matched by value,
    #: :func:`edge_yolo.quant.qat_export.tflite_qat_ranges`); the rest are calibrated.
    #: False calibrates every range, as for PTQ.
    qat_ranges: bool = True

    def __post_init__(self) -> None:
        if self.calib_ranges not in TFLITE_RANGES:
            raise TargetError(
                f"calib_ranges must be one of {', '.join(TFLITE_RANGES)}, "
                f"got {self.calib_ranges!r}"
            )


def xnnpack_form(model: nn.Module) -> nn.Module:
    """``model`` with the two operators XNNPACK does not run swapped for equal ones it does.

    In the converted int8 gelan-t, 7 of 684 operators ran outside the XNNPACK delegate,
    splitting the graph into 8 partitions (``benchmarks/bench_tflite_ops.py``): XNNPACK has no
    int8 AVERAGE_POOL_2D and no RESIZE_NEAREST_NEIGHBOR, so TFLite ran them with its own
    single-threaded kernels between partitions. The same arithmetic in operators it has:
    the 2x2 stride-1 average pool of AConv as a depthwise 2x2 convolution with weights 1/4
    (exact in int8: a per-channel scale of 1/508 puts 1/4 at 127), the 2x nearest upsample
    as concatenations and reshapes in NHWC (copies only). In float both are bit-identical to
    the originals.
    """
    import copy

    import torch
    from torch import nn

    from ..models.layers import AConv

    class DepthwiseMean2x2(nn.Conv2d):
        def __init__(self, channels: int) -> None:
            super().__init__(channels, channels, 2, 1, 0, groups=channels, bias=False)
            nn.init.constant_(self.weight, 0.25)
            self.requires_grad_(False)

    class NearestUp2(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x.permute(0, 2, 3, 1)  # NHWC, as the converted graph holds it: no transposes
            n, h, w, c = y.shape
            y = torch.cat((y, y), dim=3).reshape(n, h, 2 * w, c)  # each pixel twice in a row
            y = torch.cat((y, y), dim=2).reshape(n, 2 * h, 2 * w, c)  # each row twice
            return y.permute(0, 3, 1, 2)

    model = copy.deepcopy(model)
    for module in list(model.modules()):
        if isinstance(module, AConv) and isinstance(module.pool, nn.AvgPool2d):
            conv = module.conv.conv
            module.pool = DepthwiseMean2x2(conv.in_channels).to(conv.weight.device)
        for name, child in module.named_children():
            if (isinstance(child, nn.Upsample) and child.mode == "nearest"
                    and child.scale_factor in (2, 2.0, (2.0, 2.0))):
                setattr(module, name, NearestUp2())
    return model


def tflite_form(model: nn.Module) -> nn.Module:
    """The module litert-torch converts: NHWC ``images`` in, outputs named by a dict, and the
    operators XNNPACK lacks replaced (:func:`xnnpack_form`)."""
    from torch import nn

    class NHWCExportModel(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, images: Any) -> dict[str, Any]:
            box_dist, cls_logits = self.inner(images.permute(0, 3, 1, 2))
            # A dict return names the signature outputs; TFLite may reorder output tensors,
            # and nc can equal 64, so the runtime maps them by these names, not by shape.
            return {"box_dist": box_dist, "cls_logits": cls_logits}

    return NHWCExportModel(xnnpack_form(model)).eval()


def convert_float(model: nn.Module, imgsz: int) -> bytes:
    """Fused ``ExportModel`` (NCHW) -> float32 TFLite flatbuffer with an NHWC ``images`` input."""
    import litert_torch
    import torch

    sample = torch.zeros(1, imgsz, imgsz, 3)
    with torch.inference_mode():
        edge_model = litert_torch.convert(tflite_form(model), sample_kwargs={INPUT_NAME: sample})
    return bytes(edge_model.model_content())


# ----------------------------------------------------------------------------- flatbuffer I/O


def embed_metadata(model: bytes, text: str, key: str = META_KEY) -> bytes:
    """Return ``model`` with ``text`` stored as the model-metadata entry ``key`` (replacing one).

    Tensor data is written after the flatbuffer at 16-byte aligned offsets (the layout
    ai-edge-quantizer writes; read by TFLite >= 2.14); metadata buffers stay inline, where
    older runtimes look for them.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    payload = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    entries = [m for m in (obj.metadata or []) if _name(m.name) != key]
    buffer = schema.BufferT()
    buffer.data = payload
    obj.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = key
    entry.buffer = len(obj.buffers) - 1
    obj.metadata = [*entries, entry]
    keep_inline = {m.buffer for m in obj.metadata}
    tail: dict[int, np.ndarray] = {}
    for i, buf in enumerate(obj.buffers):
        if buf.data is not None and len(buf.data) and i not in keep_inline:
            tail[i] = np.frombuffer(buf.data, dtype=np.uint8)
            # Placeholders so the offset/size fields are packed and can be patched in place.
            buf.data, buf.offset, buf.size = None, 1, 1
        elif buf.data is not None and not isinstance(buf.data, np.ndarray):
            buf.data = np.frombuffer(bytes(buf.data), dtype=np.uint8)
    head = bytearray(flatbuffer_utils.convert_object_to_bytearray(obj))
    packed = schema.Model.GetRootAs(head, 0)
    out = bytearray(head)
    for i, data in tail.items():
        out.extend(b"\0" * (-len(out) % _ALIGN))
        flatbuffer_utils.update_packed_buffer(packed.Buffers(i), offset=len(out), size=data.size)
        out.extend(data.tobytes())
    # update_packed_buffer wrote into ``head``; copy the patched table back over the prefix.
    out[: len(head)] = head
    return bytes(out)


def _name(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def io_specs(model: bytes, dtype_meaning: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input/output :class:`TensorSpec`s read from the file itself (signature names, real shapes,
    dtypes and quantization parameters), so the metadata cannot drift from the model."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model)
    runner = interp.get_signature_runner(SIGNATURE)
    ins, outs = runner.get_input_details(), runner.get_output_details()
    if set(ins) != {INPUT_NAME} or set(outs) != set(OUTPUT_NAMES):
        raise ExportError(
            f"converted model has signature inputs {sorted(ins)} and outputs {sorted(outs)}; "
            f"expected [{INPUT_NAME!r}] and {list(OUTPUT_NAMES)}"
        )
    meanings = {
        INPUT_NAME: f"letterboxed RGB in [0, 1], NHWC{dtype_meaning}",
        "box_dist": "DFL logits, 16 bins x LTRB per anchor (P3, P4, P5 row-major)",
        "cls_logits": "class logits (sigmoid -> scores) per anchor",
    }

    def spec(name: str, d: dict[str, Any]) -> TensorSpec:
        dtype = np.dtype(d["dtype"]).name
        scale, zero_point = d["quantization"]
        quantized = np.issubdtype(np.dtype(d["dtype"]), np.integer) and scale > 0
        return TensorSpec(
            name=name,
            shape=[int(v) for v in d["shape"]],
            dtype=dtype,
            meaning=meanings[name],
            scale=float(scale) if quantized else None,
            zero_point=int(zero_point) if quantized else None,
        )

    return [spec(INPUT_NAME, ins[INPUT_NAME])], [spec(n, outs[n]) for n in OUTPUT_NAMES]


def op_counts(model: bytes) -> dict[str, int]:
    """Builtin operator histogram of a TFLite model (what the device will run)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model)
    ops = collections.Counter(op["op_name"] for op in interp._get_ops_details())
    return dict(ops.most_common())


def _version(dist: str) -> str:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


# ------------------------------------------------------------------------------- the exporter


class TFLiteExporter(Exporter):
    """FP32 / FP16-weights / full-integer INT8 ``.tflite`` for Raspberry Pi (XNNPACK)."""

    options_type = TFLiteOptions

    def build(self, job: ExportJob, staging: Path) -> Artifact:
        opts: TFLiteOptions = job.target_options or TFLiteOptions()
        t0 = time.perf_counter()
        source = job.model
        if job.qat is not None:  # the QAT-adapted weights, on their int8 grid
            from ..models import ExportModel
            from ..quant.qat_export import bake_weights

            source = ExportModel(bake_weights(job.yolo)).eval()
        try:
            model = convert_float(source, job.imgsz)
        except Exception as e:  # the converter raises many types; say which step failed
            raise ExportError(f"litert-torch could not convert {job.model_name}: {e}") from e
        timings = {"convert_s": round(time.perf_counter() - t0, 2)}
        io_note = ""
        ranges_note: dict[str, str] = {}
        if job.precision == "fp16":
            t1 = time.perf_counter()
            model = quantize_tflite_fp16_weights(model)
            timings["quantize_s"] = round(time.perf_counter() - t1, 2)
        elif job.precision == "int8":
            t1 = time.perf_counter()
            overrides = None
            if job.qat is not None and opts.qat_ranges:
                overrides, ranges_note["activation_ranges"] = self._qat_ranges(job, model)
            model = quantize_tflite_full_integer(
                model,
                job.calibration(),
                job.imgsz,
                signature=SIGNATURE,
                ranges=opts.calib_ranges,
                exact_input_range=opts.exact_input_range,
                threads=opts.calib_threads,
                float_regexes=tflite_regexes(job.float_blocks),
                range_overrides=overrides,
            )
            timings["quantize_s"] = round(time.perf_counter() - t1, 2)
            io_note = ", int8: real = (q - zero_point) * scale"
        inputs, outputs = io_specs(model, io_note)
        ops = op_counts(model)
        if job.precision == "int8" and not job.float_blocks:
            self._check_full_integer(model, ops)
        filename = f"{job.model_name}-{job.imgsz}-{job.precision}.tflite"
        atomic_write_bytes(staging / filename, model)
        return Artifact(
            model_file=filename,
            inputs=inputs,
            outputs=outputs,
            quantization=QUANTIZATION[job.precision],
            layout="NHWC",
            extra={
                "converter": f"litert-torch {_version('litert-torch')}",
                "quantizer": (
                    f"ai-edge-quantizer {_version('ai-edge-quantizer')}"
                    if job.precision != "fp32"
                    else None
                ),
                "quantized": {
                    "fp32": "nothing",
                    "fp16": "conv weights stored as float16 (dequantized at load); float32 compute",
                    "int8": "int8 weights (per channel) and activations (per tensor); int8 input "
                    "and outputs",
                }[job.precision],
                "signature": SIGNATURE,
                "ops": ops,
                "tflite_options": options_dict(opts),
                **ranges_note,
                **timings,
            },
        )

    @staticmethod
    def _qat_ranges(job: ExportJob, float_model: bytes) -> tuple[dict[str, tuple[float, float]],
                                                                   str]:
        """The QAT model's learned activation ranges by TFLite tensor, matched on a
        calibration image; refused when none match (the converter changed beyond recognition,
        and calibrated ranges would silently replace what QAT learned)."""
        from ..quant.qat_export import tflite_qat_ranges
        from ..runtime.processing import preprocess

        blob = preprocess(job.calibration().images[0], job.imgsz)[0]
        ranges, matched, total = tflite_qat_ranges(job.yolo, float_model, blob)
        if not ranges:
            raise ExportError(
                "no TFLite activation tensor matched a QAT quantizer's input, so the learned "
                "ranges cannot be carried over; calibrate them all with "
                + option("target_options", {"qat_ranges": False}, flag="--calibrated-qat-ranges")
            )
        note = (f"the learned ranges of {matched} of {total} QAT activation quantizers, on "
                f"{len(ranges)} tensors; the other tensors calibrated")
        LOGGER.info("TFLite int8 from QAT: %s", note)
        return ranges, note

    @staticmethod
    def _check_full_integer(model: bytes, ops: dict[str, int]) -> None:
        """Refuse an "int8" file that still computes in float (the weights-only trap)."""
        from ai_edge_litert.interpreter import Interpreter

        if ops.get("DEQUANTIZE"):
            raise ExportError(
                f"int8 model has {ops['DEQUANTIZE']} DEQUANTIZE ops: some layers stayed float"
            )
        interp = Interpreter(model_content=model)
        floats = [t["name"] for t in interp.get_tensor_details() if t["dtype"] == np.float32]
        if floats:
            raise ExportError(
                f"int8 model still has {len(floats)} float32 tensors (e.g. {floats[0]!r})"
            )

    def embed_metadata(self, model_path: Path, meta: BundleMeta) -> None:
        atomic_write_bytes(model_path, embed_metadata(model_path.read_bytes(), meta.to_json()))

    def readme_section(self, meta: BundleMeta, job: ExportJob) -> str:
        lines = [
            "## TFLite notes",
            f"- input `{meta.inputs[0].name}` {meta.inputs[0].shape} {meta.inputs[0].dtype} "
            f"(NHWC); outputs `box_dist` and `cls_logits` are looked up by signature name.",
            "- runs on `ai-edge-litert` (preferred) or `tflite-runtime` >= 2.14 with the "
            "XNNPACK delegate; pass `threads=` to use fewer than all cores.",
        ]
        if meta.quantization == "full-integer":
            spec = meta.inputs[0]
            lines.append(
                f"- full-integer INT8: the runtime quantizes the input with scale "
                f"{spec.scale:.6g}, zero point {spec.zero_point} and dequantizes both outputs "
                "with their own parameters (in the metadata)."
            )
            lines.append(
                "- speed: install `ai-edge-litert`. The tflite-runtime 2.14 wheel's XNNPACK does "
                "not take int8 graphs, so there INT8 runs on the slower built-in kernels "
                "(results agree to a few quantization steps)."
            )
        elif meta.quantization == "fp16-weights":
            lines.append("- FP16 here means float16 *weights* only; arithmetic stays float32.")
        return "\n".join(lines)
