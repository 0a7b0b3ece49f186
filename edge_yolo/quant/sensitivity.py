"""Which blocks lose most to int8, and mixed precision that keeps the worst ones in float.

:func:`rank_blocks` quantizes the whole model once (NNCF fake quantization in torch, with the
target's scheme, ranges from part of the calibration set), then restores one block at a time to
float by switching its quantizers off, and measures how much the output error on the held-back
part of the calibration set falls. The block whose restoring removes the most error is the most
sensitive. Blocks are the architecture's own (:data:`BLOCKS`: ``backbone.stage3``,
``neck.top_down4``, ``head``, ...), the names a user sees in docs/MODEL_FACTS.md.

:func:`choose_float_blocks` then keeps the most sensitive blocks in float, one more at a time,
until the measured mAP50-95 drop of the fake-quantized model on labelled held-back images is
under the budget. ``edge-yolo export --max-drop X`` uses it; each target then leaves those
blocks in float its own way (OpenVINO: NNCF ignored scope; TensorRT: no Q/DQ on their
convolutions; TFLite: float ops in the quantization recipe), and the bundle records them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .calibration import CalibrationSet

#: the quantizable blocks of GELAN's inference graph, input to output
BLOCKS = (
    "backbone.stem", "backbone.down1", "backbone.elan1", "backbone.down2", "backbone.stage3",
    "backbone.down3", "backbone.stage4", "backbone.down4", "backbone.stage5",
    "neck.spp", "neck.top_down4", "neck.top_down3", "neck.down4", "neck.bottom_up4",
    "neck.down5", "neck.bottom_up5", "head",
)


@dataclass
class BlockSensitivity:
    block: str
    quantizers: int
    error_restored: float  # output error with this block alone in float
    gain: float  # output error removed by restoring it (all-int8 error - error_restored)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def block_of(name: str) -> str | None:
    """The block of a module path or an NNCF op name (``backbone/stage3/cv1/conv/conv2d/0``,
    ``__module.model.neck.spp.cv1``, ``/backbone/stage3/Conv``): the first block named in it."""
    parts = [p for p in re.split(r"[./]", name) if p]
    if "aux" in parts:  # the PGI branch is never deployed
        return None
    if parts[:2] == ["post_hooks", "x__0"]:  # NNCF's quantizer of the model input: the stem's
        return "backbone.stem"
    for i, part in enumerate(parts):
        if part == "head":
            return "head"
        if part in ("backbone", "neck") and i + 1 < len(parts):
            block = f"{part}.{parts[i + 1]}"
            if block in BLOCKS:
                return block
    return None


def check_blocks(blocks: Sequence[str]) -> list[str]:
    unknown = [b for b in blocks if b not in BLOCKS]
    if unknown:
        raise ValueError(f"unknown block(s) {', '.join(unknown)}; blocks: {', '.join(BLOCKS)}")
    return list(blocks)


def output_error(outputs: list[tuple[np.ndarray, np.ndarray]],
                 reference: list[tuple[np.ndarray, np.ndarray]], reg_max: int) -> float:
    """Mean |score difference| plus mean |distance difference| (in bins / reg_max) over the
    anchors the float model scores >= 0.1 on: the error where detections are."""
    from ..runtime.processing import dfl_decode, sigmoid

    errors = []
    for (box, cls), (rbox, rcls) in zip(outputs, reference):
        for i in range(len(box)):
            ref_score = sigmoid(rcls[i]).max(0)
            sel = ref_score >= min(0.1, float(ref_score.max()))
            score = np.abs(sigmoid(cls[i][:, sel]) - sigmoid(rcls[i][:, sel])).mean()
            dist = np.abs(dfl_decode(box[i], reg_max)[sel]
                          - dfl_decode(rbox[i], reg_max)[sel]).mean()
            errors.append(score + dist / reg_max)
    return float(np.mean(errors))


def _run(model: Any, blobs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    import torch

    from ..models.export_form import ExportModel

    wrapped = ExportModel(model).eval()
    out = []
    with torch.no_grad():
        for blob in blobs:
            box, cls = wrapped(torch.from_numpy(blob))
            out.append((box.numpy(), cls.numpy()))
    return out


def split_calibration(calib: CalibrationSet, held_out: float = 0.25
                      ) -> tuple[CalibrationSet, list[np.ndarray]]:
    """Ranges from the first part, error measured on the rest (at least one image each)."""
    n = len(calib.images)
    k = min(max(1, round(n * held_out)), n - 1) if n > 1 else 0
    fit = CalibrationSet(calib.images[: n - k] or calib.images, calib.source, calib.split,
                         calib.requested)
    return fit, calib.images[n - k:] or calib.images


def rank_blocks(model: Any, calib: CalibrationSet, imgsz: int, target: str,
                held_out: float = 0.25) -> list[BlockSensitivity]:
    """Blocks of a fused float model, most sensitive to int8 first (see the module doc)."""
    from ..runtime.processing import preprocess
    from .qat import quantize_model, quantizers

    fit, held = split_calibration(calib, held_out)
    blobs = [preprocess(im, imgsz)[0] for im in held]
    reference = _run(model, blobs)
    quantized = quantize_model(copy.deepcopy(model), fit, imgsz, target)
    by_block: dict[str, list[Any]] = {b: [] for b in BLOCKS}
    for name, q in quantizers(quantized):
        block = block_of(name.split("hooks.", 1)[-1])
        if block is not None:
            by_block[block].append(q)
    all_int8 = output_error(_run(quantized, blobs), reference, model.reg_max)
    ranking = []
    for block, qs in by_block.items():
        if not qs:
            continue
        for q in qs:
            q.disable_quantization()
        err = output_error(_run(quantized, blobs), reference, model.reg_max)
        for q in qs:
            q.enable_quantization()
        ranking.append(BlockSensitivity(block, len(qs), err, all_int8 - err))
    ranking.sort(key=lambda s: -s.gain)
    return ranking


@dataclass
class MixedPrecision:
    """What ``--max-drop`` chose, and the measurements behind the choice."""

    max_drop: float
    float_blocks: list[str]
    measured_drop: float  # mAP50-95 points, fake-quant torch, on the held-back images
    steps: list[dict[str, Any]]  # each tried set of float blocks and its drop
    ranking: list[dict[str, Any]]
    eval_images: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_float_blocks(
    model: Any,
    calib: CalibrationSet,
    imgsz: int,
    target: str,
    max_drop: float,
    evaluate: Callable[[Any], float],
    eval_images: int,
    log: Callable[[str], None] = print,
) -> MixedPrecision:
    """Keep the most sensitive blocks in float until the fake-quantized model's measured
    mAP50-95 drop (``evaluate(model) -> mAP50-95``, on labelled held-back images) is at most
    ``max_drop`` points; all blocks float if nothing smaller meets it."""
    from .qat import quantize_model

    ranking = rank_blocks(model, calib, imgsz, target)
    base = evaluate(model)
    blocks: list[str] = []
    steps = []
    drop = float("nan")
    for i in range(len(ranking) + 1):
        quantized = quantize_model(copy.deepcopy(model), calib, imgsz, target,
                                   ignored_scope=blocks)
        drop = 100 * (base - evaluate(quantized))
        steps.append({"float_blocks": list(blocks), "drop": round(drop, 3)})
        log(f"mixed precision: {len(blocks)} block(s) in float "
            f"({', '.join(blocks) or 'none'}): drop {drop:.2f} mAP50-95 points")
        if drop <= max_drop or i == len(ranking):
            break
        blocks.append(ranking[i].block)
    return MixedPrecision(max_drop, blocks, round(drop, 3), steps,
                          [r.to_dict() for r in ranking], eval_images)


# ------------------------------------------------------------------ each target's float blocks


def openvino_patterns(blocks: Sequence[str]) -> list[str]:
    """NNCF ignored-scope patterns over an IR converted from torch, whose node names carry
    the module path (``__module.model.backbone.stage3.cv1.conv/aten::_convolution/...``)."""
    return [rf".*\.{re.escape(b)}[./].*" for b in check_blocks(blocks)]


def onnx_nodes(model: Any, blocks: Sequence[str]) -> list[str]:
    """Names of the Conv nodes of ``blocks`` in an exported ONNX graph, found by their weight
    initializer (``model.backbone.stage3.cv1.conv.weight``): the nodes left without Q/DQ."""
    wanted = set(check_blocks(blocks))
    return [n.name for n in model.graph.node
            if n.op_type == "Conv" and len(n.input) > 1 and block_of(n.input[1]) in wanted]


def tflite_regexes(blocks: Sequence[str]) -> list[str]:
    """ai-edge-quantizer recipe regexes over litert-torch tensor names, which spell each
    module as ``<Class>_<attribute>`` (``..._backbone/...RepNCSPELAN4_stage3/...``)."""
    out = []
    for b in check_blocks(blocks):
        parts = b.split(".")
        out.append(".*" + "/[^/;]*".join(f"_{re.escape(p)}" for p in parts) + "[/;].*")
    return out
