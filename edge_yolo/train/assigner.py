"""Task-aligned label assignment (TOOD, arXiv 2108.07755) as YOLOv9 trains with it.

For every ground-truth box the candidates are the anchor points whose centre lies inside
it. Each candidate is scored by the alignment metric ``t = s**alpha * u**beta`` where ``s``
is the predicted score of the GT's class and ``u`` the CIoU of the predicted box with the
GT; the ``topk`` best candidates become positives. An anchor claimed by several GTs keeps
the one it overlaps most. Soft class targets are ``t`` rescaled per GT so that its best
anchor's target equals that GT's best IoU.

Everything works on padded ``(B, M, A)`` tensors (``M`` = most GTs in one image, ``A`` =
anchor points), so there is no Python loop over images, GTs or anchors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_EPS = 1e-9


def box_ciou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU (Zheng et al., arXiv 1911.08287) of paired xyxy boxes ``(..., 4)`` -> ``(...)``.

    ``CIoU = IoU - d^2 / c^2 - a*v``: ``d`` the centre distance, ``c`` the enclosing box's
    diagonal, ``v`` the aspect-ratio discrepancy and ``a = v / (1 - IoU + v)`` its weight,
    which (as in the paper) is treated as a constant for the gradient.
    """
    x1a, y1a, x2a, y2a = box1.unbind(-1)
    x1b, y1b, x2b, y2b = box2.unbind(-1)
    wa, ha = x2a - x1a, (y2a - y1a).clamp(min=eps)
    wb, hb = x2b - x1b, (y2b - y1b).clamp(min=eps)

    inter = (torch.minimum(x2a, x2b) - torch.maximum(x1a, x1b)).clamp(min=0) * (
        torch.minimum(y2a, y2b) - torch.maximum(y1a, y1b)
    ).clamp(min=0)
    union = wa * ha + wb * hb - inter + eps
    iou = inter / union

    cw = torch.maximum(x2a, x2b) - torch.minimum(x1a, x1b)
    ch = torch.maximum(y2a, y2b) - torch.minimum(y1a, y1b)
    diag2 = cw**2 + ch**2 + eps
    dist2 = ((x1b + x2b - x1a - x2a) ** 2 + (y1b + y2b - y1a - y2a) ** 2) / 4
    v = (4 / math.pi**2) * (torch.atan(wb / hb) - torch.atan(wa / ha)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (dist2 / diag2 + v * alpha)


@dataclass
class Assignment:
    """Per-anchor training targets for one head (``B`` images, ``A`` anchor points)."""

    fg_mask: torch.Tensor  # (B, A) bool: positive anchors
    target_boxes: torch.Tensor  # (B, A, 4) xyxy pixels of the assigned GT (zeros off fg)
    target_scores: torch.Tensor  # (B, A, nc) soft one-hot: class of the GT x normalised metric
    target_labels: torch.Tensor  # (B, A) long, class of the assigned GT (0 off fg)
    target_gt_idx: torch.Tensor  # (B, A) long, index of the assigned GT in its image's padded list


class TaskAlignedAssigner:
    """Assign GT boxes to anchor points by the task-alignment metric (no learnable state)."""

    def __init__(self, *, topk: int = 10, alpha: float = 0.5, beta: float = 6.0) -> None:
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        self.topk = topk
        self.alpha = alpha
        self.beta = beta

    @torch.no_grad()
    def __call__(
        self,
        pred_scores: torch.Tensor,
        pred_boxes: torch.Tensor,
        anchor_points: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_mask: torch.Tensor,
    ) -> Assignment:
        """Assign targets.

        ``pred_scores (B, A, nc)`` sigmoid scores; ``pred_boxes (B, A, 4)`` xyxy pixels;
        ``anchor_points (A, 2)`` pixels; ``gt_labels (B, M)`` long; ``gt_boxes (B, M, 4)``
        xyxy pixels; ``gt_mask (B, M)`` bool, False for padding slots.
        """
        b, a, nc = pred_scores.shape
        m = gt_boxes.shape[1]
        device = pred_scores.device
        if m == 0:
            return Assignment(
                fg_mask=torch.zeros(b, a, dtype=torch.bool, device=device),
                target_boxes=torch.zeros(b, a, 4, device=device),
                target_scores=torch.zeros(b, a, nc, device=device),
                target_labels=torch.zeros(b, a, dtype=torch.long, device=device),
                target_gt_idx=torch.zeros(b, a, dtype=torch.long, device=device),
            )

        candidates = self._points_in_boxes(anchor_points, gt_boxes) & gt_mask[..., None]  # (B,M,A)
        overlaps, metric = self._alignment(pred_scores, pred_boxes, gt_labels, gt_boxes, candidates)

        # Out-of-box anchors rank below every candidate, so a GT whose candidates all score 0
        # (e.g. at initialisation) still gets its in-box anchors and never an outside one.
        k = min(self.topk, a)
        top = metric.masked_fill(~candidates, -1.0).topk(k, dim=-1).indices  # (B,M,k)
        in_topk = torch.zeros_like(candidates).scatter_(-1, top, True)
        positive = in_topk & candidates  # (B,M,A)

        # Conflicts: an anchor claimed by several GTs keeps only the one it overlaps most.
        claims = positive.sum(1)  # (B,A)
        if (claims > 1).any():
            best_gt = overlaps.masked_fill(~positive, -1.0).argmax(1)  # (B,A)
            best = torch.zeros_like(positive).scatter_(1, best_gt[:, None], True)
            positive = torch.where((claims > 1)[:, None], best & positive, positive)

        fg_mask = positive.any(1)  # (B,A)
        gt_idx = positive.to(torch.uint8).argmax(1)  # (B,A); 0 where not fg, masked below
        labels = gt_labels.gather(1, gt_idx)  # (B,A)
        boxes = gt_boxes.gather(1, gt_idx[..., None].expand(b, a, 4))  # (B,A,4)

        # Soft targets: metric / (GT's best metric) * (GT's best IoU), over its positives.
        metric = metric * positive
        best_metric = metric.amax(-1, keepdim=True)  # (B,M,1)
        best_overlap = (overlaps * positive).amax(-1, keepdim=True)
        norm = (metric * best_overlap / (best_metric + _EPS)).amax(1)  # (B,A)
        scores = torch.zeros(b, a, nc, device=device, dtype=pred_scores.dtype)
        scores.scatter_(-1, labels[..., None], 1.0)
        scores = scores * (norm * fg_mask)[..., None]

        return Assignment(
            fg_mask=fg_mask,
            target_boxes=boxes * fg_mask[..., None],
            target_scores=scores,
            target_labels=labels * fg_mask,
            target_gt_idx=gt_idx * fg_mask,
        )

    @staticmethod
    def _points_in_boxes(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``(A, 2)`` points, ``(B, M, 4)`` boxes -> ``(B, M, A)``: point strictly inside box."""
        # Boolean comparisons per axis: no (B, M, A, 4) float tensor, which at 640 px with a
        # crowded mosaic batch would take gigabytes.
        x, y = points[:, 0], points[:, 1]
        x1, y1, x2, y2 = (boxes[..., i, None] for i in range(4))  # (B,M,1) each
        return (x - x1 > _EPS) & (x2 - x > _EPS) & (y - y1 > _EPS) & (y2 - y > _EPS)

    def _alignment(
        self,
        pred_scores: torch.Tensor,
        pred_boxes: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_boxes: torch.Tensor,
        candidates: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CIoU overlaps and alignment metric ``(B, M, A)``, zero outside the candidates."""
        overlaps = torch.zeros(candidates.shape, device=pred_boxes.device, dtype=pred_boxes.dtype)
        metric = torch.zeros_like(overlaps)
        # Only candidate pairs are computed: most of the (B, M, A) pairs are not candidates.
        bi, mi, ai = candidates.nonzero(as_tuple=True)
        iou = box_ciou(gt_boxes[bi, mi], pred_boxes[bi, ai]).clamp(min=0)
        score = pred_scores[bi, ai, gt_labels[bi, mi]]  # predicted score of the GT's class
        overlaps[bi, mi, ai] = iou
        metric[bi, mi, ai] = score.pow(self.alpha) * iou.pow(self.beta)
        return overlaps, metric
