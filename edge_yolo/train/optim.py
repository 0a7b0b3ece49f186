"""The optimizer (SGD or AdamW) with the three YOLO parameter groups, warmup and the per-epoch LR
schedule."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .config import OPTIMIZERS

# Group order is part of the checkpoint format (optimizer state is saved by group index).
WEIGHTS, BN_WEIGHTS, BIASES = 0, 1, 2


def build_optimizer(
    model: nn.Module, lr: float, momentum: float, weight_decay: float, kind: str = "SGD"
) -> torch.optim.Optimizer:
    """SGD nesterov (or AdamW, ``momentum`` as its beta1): conv/linear weights decay; BN
    weights and all biases do not.

    SGD is the reference schedule's. AdamW reaches a usable detector in far fewer updates,
    which is what a from-scratch run on a few hundred images has (the peer tools pick it
    below ~10k iterations for that reason).

    Decaying BN scales and biases only pulls them toward zero, which hurts small models;
    so weight decay applies to the conv/linear weights that carry the features. Any other
    parameter (BN, or the scale of a fake quantizer in QAT) joins the BN group: no decay.
    """
    decay, bn, bias = [], [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if name == "bias":
                bias.append(p)
            elif name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear)):
                decay.append(p)
            else:  # BN weights, and a quantizer's learned ranges (QAT): decay would shrink them
                bn.append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "name": "weights"},
        {"params": bn, "weight_decay": 0.0, "name": "bn_weights"},
        {"params": bias, "weight_decay": 0.0, "name": "biases"},
    ]
    # foreach: one multi-tensor kernel per group; torch picks it by itself only on CUDA, and
    # the per-tensor loop over a GELAN's ~700 parameters costs ~2x longer on a CPU
    if kind == "AdamW":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999), foreach=True)
    if kind != "SGD":
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {kind!r}")
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True, foreach=True)


def lr_lambda(epochs: int, lrf: float, cosine: bool) -> Callable[[int], float]:
    """LR factor per epoch: linear (or cosine) from 1 at epoch 0 to ``lrf`` at the last."""
    if cosine:
        return lambda e: ((1 - math.cos(e * math.pi / epochs)) / 2) * (lrf - 1) + 1
    return lambda e: (1 - e / epochs) * (1.0 - lrf) + lrf


def warmup_iters(epochs_of_warmup: float, iters_per_epoch: int, min_iters: int) -> int:
    """Warmup length in iterations: max(warmup epochs, a floor), none when both are 0."""
    if epochs_of_warmup <= 0 and min_iters <= 0:
        return 0
    return max(round(epochs_of_warmup * iters_per_epoch), min_iters)


def fit_warmup(n_warmup: int, total_iters: int) -> int:
    """A warm-up longer than half the schedule is cut to a third of it: a short run (a quick
    start, a smoke test) would otherwise spend its whole schedule below its learning rate and
    with a ramping momentum, and visibly learn nothing."""
    if total_iters > 0 and n_warmup > total_iters / 2:
        return max(1, total_iters // 3)
    return n_warmup


def apply_warmup(
    optimizer: torch.optim.Optimizer,
    iteration: int,
    n_warmup: int,
    epoch_factor: float,
    *,
    bias_lr: float,
    momentum: tuple[float, float],
) -> None:
    """Ramp every group's LR from 0 (biases: from ``bias_lr``) to its scheduled value.

    The bias LR starts high and falls: the head's class-prior biases settle fast while
    the weights are still near their initialisation. Momentum ramps ``momentum[0] -> [1]``.
    """
    xp = [0, n_warmup]
    for j, group in enumerate(optimizer.param_groups):
        start = bias_lr if j == BIASES else 0.0
        group["lr"] = float(np.interp(iteration, xp, [start, group["initial_lr"] * epoch_factor]))
        beta1 = float(np.interp(iteration, xp, list(momentum)))
        if "betas" in group:  # AdamW: momentum is its first beta
            group["betas"] = (beta1, group["betas"][1])
        else:
            group["momentum"] = beta1


def amp_dtype(amp: bool | None, device: torch.device) -> torch.dtype | None:
    """float16 autocast + GradScaler on CUDA; on a CPU off unless asked (then bfloat16).

    On a CPU with AMX (2-core Xeon, 320 px, batch 8) the training loop ran 1.34x (gelan-t)
    and 1.38x (yolov9-t) faster in bfloat16, but two 40-epoch yolov9-t pairs from scratch on
    raccoon ended 0.051 and 0.070 mAP50-95 below float32 (benchmarks/results/
    cpu-bf16-training.md), so CPU training stays float32 unless ``--amp`` asks for the speed.
    """
    if amp is None:
        amp = device.type == "cuda"
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16


def dtype_name(dtype: torch.dtype | None) -> str:
    return "off" if dtype is None else str(dtype).removeprefix("torch.")
