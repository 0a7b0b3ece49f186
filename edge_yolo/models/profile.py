"""Parameter and FLOP counts measured on the actual modules with forward hooks.

FLOPs are 2 x multiply-adds of the convolution and linear layers, the convention of the
published YOLOv9 table (pooling, activations and additions are not counted).
"""

from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, imgsz: int = 640, forward=None) -> float:
    """FLOPs of one forward pass on a ``(1, 3, imgsz, imgsz)`` input."""
    macs = 0

    def conv_hook(m: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal macs
        kh, kw = m.kernel_size
        macs += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal macs
        macs += out.numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        x = torch.zeros(1, 3, imgsz, imgsz, device=p.device, dtype=p.dtype)
        (forward or model)(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return 2.0 * macs


def model_summary(model: nn.Module, imgsz: int = 640) -> str:
    from .fuse import is_fused

    name = getattr(model, "name", type(model).__name__)
    layers = sum(1 for _ in model.modules())
    params = count_params(model)
    gflops = count_flops(model, imgsz) / 1e9
    state = "fused" if is_fused(model) else "unfused"
    return (
        f"{name} ({state}): {layers} modules, {params / 1e6:.2f}M parameters, "
        f"{gflops:.1f} GFLOPs at {imgsz}x{imgsz}"
    )
