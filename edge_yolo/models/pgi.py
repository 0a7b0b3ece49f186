"""PGI auxiliary branch of the small YOLOv9 models (T, S).

For T and S the auxiliary branch is a second, FPN-style neck on the shared backbone:
SPPELAN on B5 -> upsample + concat B4 -> RepNCSPELAN4 -> upsample + concat B3 ->
RepNCSPELAN4, feeding its own DDetect head. It gives the backbone reliable gradients during
training and is dropped for inference (the reversible CBLinear/CBFuse column belongs to the
large C/E models only).
"""

from __future__ import annotations

import torch
from torch import nn

from .head import DDetect, LevelOutput
from .layers import SPPELAN, RepNCSPELAN4


class AuxiliaryNeck(nn.Module):
    def __init__(self, w: int, n: int) -> None:
        super().__init__()
        self.spp = SPPELAN(8 * w, 8 * w, 4 * w)  # aux P5
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.top_down4 = RepNCSPELAN4(14 * w, 6 * w, 6 * w, 3 * w, n)  # aux P4
        self.top_down3 = RepNCSPELAN4(10 * w, 4 * w, 4 * w, 2 * w, n)  # aux P3

    def forward(self, feats: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        b3, b4, b5 = feats
        a5 = self.spp(b5)
        a4 = self.top_down4(torch.cat((self.up(a5), b4), 1))
        a3 = self.top_down3(torch.cat((self.up(a4), b3), 1))
        return [a3, a4, a5]


class AuxiliaryBranch(nn.Module):
    """Auxiliary neck + head; training-only, removed by ``YOLO.drop_auxiliary()``."""

    def __init__(
        self,
        w: int,
        n: int,
        num_classes: int,
        strides: tuple[int, ...] = (8, 16, 32),
        reg_max: int = 16,
        widths: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.neck = AuxiliaryNeck(w, n)
        self.head = DDetect(num_classes, (4 * w, 6 * w, 8 * w), strides, reg_max, widths)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> list[LevelOutput]:
        return self.head(self.neck(feats))
