"""DDetect: YOLOv9's decoupled, anchor-free detection head.

The head returns raw outputs only: per level, box-distribution logits ``(B, 4*reg_max, H, W)``
and class logits ``(B, nc, H, W)``. Decoding (DFL, anchors, sigmoid) lives in
:mod:`edge_yolo.models.decode` (torch) and :mod:`edge_yolo.runtime.processing` (numpy), so
an exported, quantized graph never carries the operations that break in INT8.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import Conv

LevelOutput = tuple[torch.Tensor, torch.Tensor]


def _round_up(x: int, divisor: int) -> int:
    return math.ceil(x / divisor) * divisor


def head_widths(in_channels: tuple[int, ...], num_classes: int, reg_max: int) -> tuple[int, int]:
    """Widths of the box and class branches.

    The class branch uses ``max(ch0, min(nc, 100))``: it reproduces the published YOLOv9-T
    size (2.0M / 7.7G) while the official config code's ``min(2*nc, 128)`` does not, and
    both rules give the same YOLOv9-S (see docs/MODEL_FACTS.md).
    """
    ch0 = in_channels[0]
    c_box = _round_up(max(ch0 // 4, reg_max * 4, 16), 4)
    c_cls = max(ch0, min(num_classes, 100))
    return c_box, c_cls


class DDetect(nn.Module):
    """Per level: box branch (3x3, grouped 3x3, grouped 1x1 -> 4*reg_max) and class branch."""

    def __init__(
        self,
        num_classes: int,
        in_channels: tuple[int, ...],
        strides: tuple[int, ...] = (8, 16, 32),
        reg_max: int = 16,
        widths: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.strides = tuple(strides)
        c_box, c_cls = widths or head_widths(tuple(in_channels), num_classes, reg_max)
        self.box = nn.ModuleList(
            nn.Sequential(
                Conv(c, c_box, 3),
                Conv(c_box, c_box, 3, groups=4),
                nn.Conv2d(c_box, 4 * reg_max, 1, groups=4),
            )
            for c in in_channels
        )
        self.cls = nn.ModuleList(
            nn.Sequential(
                Conv(c, c_cls, 3), Conv(c_cls, c_cls, 3), nn.Conv2d(c_cls, num_classes, 1)
            )
            for c in in_channels
        )
        self.reset_bias()

    @torch.no_grad()
    def reset_bias(self, image_size: int = 640) -> None:
        """Box logits start flat (1.0); class logits start at a ~5-objects-per-image prior."""
        for box, cls, s in zip(self.box, self.cls, self.strides):
            box[-1].bias.fill_(1.0)
            cls[-1].bias.fill_(math.log(5 / self.num_classes / (image_size / s) ** 2))

    def forward(self, features: list[torch.Tensor]) -> list[LevelOutput]:
        return [(box(x), cls(x)) for x, box, cls in zip(features, self.box, self.cls)]
