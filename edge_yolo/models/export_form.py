"""The export form of a model: two outputs, raw box-distribution logits and class logits."""

from __future__ import annotations

import torch
from torch import nn

from ..contract import OUTPUT_NAMES
from .decode import flatten_outputs

__all__ = ["OUTPUT_NAMES", "ExportModel"]


class ExportModel(nn.Module):
    """Wraps a (fused) model so it returns ``box_dist (B, 4*reg_max, A)`` and
    ``cls_logits (B, nc, A)``, anchors in level order P3, P4, P5, each row-major.

    Boxes and scores stay in separate tensors and undecoded: per-tensor INT8 quantization of
    a tensor mixing pixel-scale boxes with 0..1 scores collapses the scores (docs/MODEL_FACTS.md).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return flatten_outputs(self.model(x))
