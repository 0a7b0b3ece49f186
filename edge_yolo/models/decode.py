"""Torch decode of the head's raw outputs, for training-time validation and for tests.

Mirrors :mod:`edge_yolo.runtime.processing` (numpy); ``tests/test_processing.py`` holds them
to the same numbers.
"""

from __future__ import annotations

import torch

from .head import LevelOutput


def make_anchors(
    shapes: list[tuple[int, int]], strides: tuple[int, ...], device=None, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor points ``(A, 2)`` in pixels (cell centres) and their strides ``(A, 1)``."""
    points, stride_col = [], []
    for (h, w), s in zip(shapes, strides):
        sy = (torch.arange(h, device=device, dtype=dtype) + 0.5) * s
        sx = (torch.arange(w, device=device, dtype=dtype) + 0.5) * s
        yy, xx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((xx, yy), -1).reshape(-1, 2))
        stride_col.append(torch.full((h * w, 1), float(s), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(stride_col)


def flatten_outputs(outputs: list[LevelOutput]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-level outputs -> ``box (B, 4*reg_max, A)``, ``cls (B, nc, A)``, levels concatenated."""
    box = torch.cat([b.flatten(2) for b, _ in outputs], 2)
    cls = torch.cat([c.flatten(2) for _, c in outputs], 2)
    return box, cls


def dfl_distances(box: torch.Tensor, reg_max: int = 16) -> torch.Tensor:
    """``(B, 4*reg_max, A)`` logits -> ``(B, 4, A)`` expected LTRB distances in stride units."""
    b, _, a = box.shape
    prob = box.view(b, 4, reg_max, a).softmax(2)
    bins = torch.arange(reg_max, device=box.device, dtype=prob.dtype)
    return torch.einsum("bkra,r->bka", prob, bins)


def dist_to_xyxy(dist: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """LTRB distances ``(..., A, 4)`` around ``points (A, 2)`` -> xyxy ``(..., A, 4)``."""
    lt, rb = dist[..., :2], dist[..., 2:]
    return torch.cat((points - lt, points + rb), -1)


def decode_outputs(
    outputs: list[LevelOutput], strides: tuple[int, ...], reg_max: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode raw outputs -> ``boxes (B, A, 4)`` xyxy in network-input pixels and
    ``scores (B, A, nc)`` (sigmoid)."""
    shapes = [tuple(b.shape[2:]) for b, _ in outputs]
    box, cls = flatten_outputs(outputs)
    points, stride_col = make_anchors(shapes, strides, box.device, box.dtype)
    dist = dfl_distances(box, reg_max).transpose(1, 2)  # (B, A, 4)
    boxes = dist_to_xyxy(dist * stride_col, points)
    return boxes, cls.sigmoid().transpose(1, 2)
