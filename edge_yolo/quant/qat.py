"""Quantization-aware fine-tuning (QAT) with NNCF, and the PGI branch kept in float.

The model that is quantized is the one that is deployed: fused (BatchNorm folded, RepConvN
merged). :func:`quantize_model` runs ``nncf.quantize`` on that torch module, which inserts
fake-quantize modules with learnable ranges (straight-through estimator) where the target's
runtime quantizes: the input activation and the weights of every convolution. The head's
decode side (reshape/concat of the raw outputs) and the outputs stay float. The training loop
then fine-tunes the quantized model like any other (:class:`edge_yolo.train.loop.ModelSetup`).

**PGI.** ``nncf.quantize`` traces ``YOLO.forward`` without the auxiliary branch, so only the
main path gets quantizers. The training pass, ``forward(x, with_aux=True)``, runs through the
same hooks and then the auxiliary neck and head in float on the (fake-quantized) backbone
features: the dual loss keeps sending the auxiliary branch's gradients into the quantized
backbone. The branch is dropped afterwards, as after float training.

**Variants** (:data:`VARIANTS`): ``task`` (the main head's loss; a PGI branch is dropped before
quantizing), ``distill`` (task loss plus distillation from the float model's outputs, for
few labels) and ``pgi`` (the dual loss, auxiliary branch in float).

**Per target** (:data:`SCHEMES`):

- ``intel``: NNCF's mixed preset (symmetric per-channel weights, asymmetric per-tensor
  activations), what OpenVINO's CPU plugin runs; the overflow fix as PTQ chooses it.
- ``rpi``: TFLite's int8 scheme is the same (symmetric per-channel weights with 127 levels,
  asymmetric per-tensor activations).
- ``jetson``: TensorRT's explicit form: symmetric signed int8 everywhere, zero point 0, no
  overflow fix. NNCF's hardware configuration refuses a request for signed activations
  (``signedness_to_force`` conflicts with every hardware config), so after range
  initialisation the activation quantizers are switched to signed: same range, the negative
  half of the codes unused on non-negative tensors, exactly as TensorRT will run them.

A QAT checkpoint stores the quantizer placement as JSON text (:func:`quantizer_config`) beside
the weights, so ``torch.load(weights_only=True)`` still reads it and
:func:`restore_quantizers` rebuilds the model without calibration data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .calibration import CalibrationSet
from .nncf_setup import quiet_nncf
from .qat_state import (
    QAT_FORMAT_VERSION,
    SCHEMES,
    VARIANTS,
    QATError,
    QATScheme,
    check_record,
    is_quantized,
    quantizer_config,
    restore_quantizers,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..models.gelan import YOLO

LOGGER = logging.getLogger(__name__)

# ------------------------------------------------------------------ quantizing the model


def scheme_for(target: str) -> QATScheme:
    try:
        return SCHEMES[target]
    except KeyError:
        raise QATError(
            f"no QAT scheme for target {target!r}; one of {', '.join(SCHEMES)}"
        ) from None


def torch_dataset(calib: CalibrationSet, imgsz: int) -> Any:
    """An ``nncf.Dataset`` of NCHW torch tensors, letterboxed by the runtime's own code."""
    import nncf
    import torch

    from ..runtime.processing import preprocess

    return nncf.Dataset(calib.images, lambda im: torch.from_numpy(preprocess(im, imgsz)[0]))


def quantize_model(
    model: YOLO,
    calib: CalibrationSet,
    imgsz: int,
    target: str,
    *,
    ignored_scope: Sequence[str] = (),
    fast_bias_correction: bool = True,
) -> YOLO:
    """Fake-quantize a fused YOLO for ``target`` in place (NNCF, ranges from ``calib``).

    Without training this is post-training quantization in torch: the "fake-quant torch"
    row beside a runtime's PTQ row. ``ignored_scope`` holds module-path patterns (regex)
    kept in float, e.g. ``head\\..*`` (see :mod:`edge_yolo.quant.sensitivity`).
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    from ..models.fuse import is_fused
    from .ptq import resolve_overflow_fix

    scheme = scheme_for(target)
    if not is_fused(model):
        raise QATError("QAT quantizes the deployed graph: fuse the model first")
    model.eval()
    overflow = resolve_overflow_fix(scheme.overflow_fix)
    params = AdvancedQuantizationParameters(overflow_fix=OverflowFix(overflow))
    scope = None
    if ignored_scope:
        scope = nncf.IgnoredScope(patterns=[_scope_pattern(p) for p in ignored_scope],
                                  validate=False)
    with quiet_nncf():
        quantized = nncf.quantize(
            model,
            torch_dataset(calib, imgsz),
            preset=nncf.QuantizationPreset(scheme.preset),
            target_device=nncf.TargetDevice.CPU,
            subset_size=len(calib),
            fast_bias_correction=fast_bias_correction,
            ignored_scope=scope,
            advanced_parameters=params,
        )
    if scheme.signed_activations:
        force_signed_activations(quantized)
    return quantized


def _scope_pattern(block: str) -> str:
    """A block name (``backbone.stage3``) as a pattern over NNCF's node names, which spell
    module paths with slashes (``backbone/stage3/cv1/conv/conv2d/0``)."""
    return "^" + block.replace(".", "/").rstrip("/") + "/.*"


def quantizers(model: nn.Module) -> list[tuple[str, Any]]:
    """NNCF's quantizer modules of a wrapped model, by hook name."""
    from nncf.torch.quantization.layers import BaseQuantizer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, BaseQuantizer)]


def force_signed_activations(model: nn.Module) -> int:
    """Switch per-tensor symmetric (activation) quantizers to signed; returns how many."""
    from nncf.torch.quantization.layers import SymmetricQuantizer

    n = 0
    for _, q in quantizers(model):
        if isinstance(q, SymmetricQuantizer) and not q.per_channel and not q.signed:
            q.signed = True
            n += 1
    return n


def describe(model: nn.Module) -> dict[str, Any]:
    """What the quantizers are: counts by kind, for the checkpoint and the bundle."""
    from nncf.torch.quantization.layers import AsymmetricQuantizer

    weights = activations = asym = unsigned = 0
    for _, q in quantizers(model):
        is_weight = q.per_channel
        weights += is_weight
        activations += not is_weight
        if not is_weight and isinstance(q, AsymmetricQuantizer):
            asym += 1
        elif not is_weight and not q.signed:
            unsigned += 1
    return {"weight_quantizers": weights, "activation_quantizers": activations,
            "asymmetric_activations": asym, "unsigned_activations": unsigned}


# ------------------------------------------------------------------ the training seam


def distillation_terms(teacher: nn.Module) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """``terms(images, outputs) -> (cls, dfl)``: how far the student's main head is from the
    float teacher's outputs on the same (augmented) batch.

    Classes: binary cross-entropy against the teacher's sigmoid scores; boxes: cross-entropy
    of the student's DFL bins against the teacher's softmax. Each is summed over the batch
    and averaged over anchors (the task loss is a per-image sum too).
    """
    import torch
    import torch.nn.functional as F

    from ..models.decode import flatten_outputs

    teacher = teacher.eval().requires_grad_(False)

    def terms(images: torch.Tensor, outputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        main = outputs[0] if isinstance(outputs, tuple) else outputs
        with torch.no_grad():
            t_box, t_cls = flatten_outputs(teacher(images))
        s_box, s_cls = flatten_outputs(main)
        b, _, a = s_box.shape
        cls = F.binary_cross_entropy_with_logits(s_cls, t_cls.sigmoid(), reduction="sum")
        s_bins = s_box.view(b, 4, -1, a).log_softmax(2)
        t_bins = t_box.view(b, 4, -1, a).softmax(2)
        dfl = -(t_bins * s_bins).sum()
        return cls / a, dfl / a

    return terms


def distillation_loss(teacher: nn.Module, weight: float = 1.0) -> Callable[..., torch.Tensor]:
    """An extra loss term for :class:`~edge_yolo.train.loop.ModelSetup` (beside the task
    loss): ``weight`` x the :func:`distillation_terms`."""
    terms = distillation_terms(teacher)

    def term(images: torch.Tensor, outputs: Any) -> torch.Tensor:
        cls, dfl = terms(images, outputs)
        return weight * (cls + dfl)

    return term


def distillation_only(teacher: nn.Module) -> Callable[..., tuple[torch.Tensor, Any]]:
    """The whole loss for images without labels (:attr:`ModelSetup.loss`): the
    :func:`distillation_terms`, logged per image as (box 0, cls, dfl)."""
    import torch

    terms = distillation_terms(teacher)

    def loss(images: torch.Tensor, outputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        cls, dfl = terms(images, outputs)
        n = images.shape[0]
        items = torch.stack([torch.zeros_like(cls), cls / n, dfl / n]).detach()
        return cls + dfl, items

    return loss


# ------------------------------------------------------------------ what a checkpoint records


def qat_record(
    *, model: nn.Module, target: str, variant: str, source: Path, source_sha256: str,
    calib: CalibrationSet, recipe: dict[str, Any], ignored_scope: Sequence[str] = (),
) -> dict[str, Any]:
    """The ``qat`` entry of a QAT checkpoint (plain types): the quantizer setup and where the
    model came from. :func:`restore_quantizers` reads ``nncf_config`` back."""
    from importlib.metadata import version

    from .ptq import resolve_overflow_fix

    return {
        "version": QAT_FORMAT_VERSION,
        "target": target,
        "scheme": scheme_for(target).to_dict(),
        # as quantize_model resolved it here: an intel bundle records it, and a CPU without
        # VNNI warns about one quantized without it
        "overflow_fix": resolve_overflow_fix(scheme_for(target).overflow_fix),
        "variant": variant,
        "source_checkpoint": str(source),
        "source_sha256": source_sha256,
        "calibration": asdict(calib.provenance()),
        "recipe": recipe,
        "ignored_scope": list(ignored_scope),
        "quantizers": describe(model),
        "nncf": version("nncf"),
        "nncf_config": quantizer_config(model),
    }


__all__ = [
    "QAT_FORMAT_VERSION",
    "SCHEMES",
    "VARIANTS",
    "QATError",
    "QATScheme",
    "check_record",
    "describe",
    "distillation_loss",
    "distillation_only",
    "distillation_terms",
    "force_signed_activations",
    "is_quantized",
    "qat_record",
    "quantize_model",
    "quantizer_config",
    "quantizers",
    "restore_quantizers",
    "scheme_for",
    "torch_dataset",
]
