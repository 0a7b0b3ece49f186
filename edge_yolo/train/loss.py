"""YOLOv9 detection loss: task-aligned assignment, CIoU + DFL box loss, BCE classification.

Each part is weighted per positive anchor by its soft target score and normalised by the sum
of all target scores (at least 1); the parts are then scaled by their gains (box 7.5,
cls 0.5, dfl 1.5). ``total`` is the weighted sum times the batch size, as in the reference
recipe: with gradient accumulation to a nominal batch of 64 and weight decay scaled by
``batch * accumulate / 64``, the per-step gradient then matches the reference's.

PGI (:class:`DualDetectionLoss`): the main and auxiliary heads are assigned independently
(each by its own predictions) and the auxiliary loss enters at ``aux_weight`` (0.25).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edge_yolo.models.decode import dfl_distances, dist_to_xyxy, flatten_outputs, make_anchors

from .assigner import Assignment, TaskAlignedAssigner, box_ciou

__all__ = [
    "DetectionLoss",
    "DualDetectionLoss",
    "LossGains",
    "build_loss",
    "distribution_focal_loss",
]

LevelOutputs = Sequence[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class LossGains:
    """Weights of the three loss parts (YOLOv9 defaults)."""

    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5


def distribution_focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DFL (GFL, arXiv 2006.04388): cross-entropy towards the two bins around ``target``.

    ``logits (..., reg_max)``, ``target (...)`` a distance in bins -> loss ``(...)``. The target
    is clamped to ``[0, reg_max - 1 - 0.01]`` so the right bin always exists; the loss is
    smallest when the distribution puts ``right - target`` on the left bin and the rest on the
    right one, whose expectation is ``target``.
    """
    reg_max = logits.shape[-1]
    target = target.clamp(0, reg_max - 1 - 0.01)
    left = target.long()
    w_left = left + 1 - target
    log_prob = logits.log_softmax(-1)
    nll_left = -log_prob.gather(-1, left[..., None]).squeeze(-1)
    nll_right = -log_prob.gather(-1, (left + 1)[..., None]).squeeze(-1)
    return nll_left * w_left + nll_right * (1 - w_left)


def _split_heads(outputs: Any) -> tuple[LevelOutputs, LevelOutputs | None]:
    """Accept ``model(x)`` (levels) or ``model.forward_train(x)`` (``(main, aux)``)."""
    if (
        isinstance(outputs, (tuple, list))
        and len(outputs) == 2
        and isinstance(outputs[0], (tuple, list))
        and len(outputs[0]) > 0
        and not isinstance(outputs[0][0], torch.Tensor)
    ):
        return outputs[0], outputs[1]
    return outputs, None


class DetectionLoss(nn.Module):
    """Loss of one detection head; ``loss(outputs, targets) -> (total, items)``.

    ``outputs``: a list of ``(box_logits (B, 4*reg_max, H, W), cls_logits (B, nc, H, W))``
    per level (or ``(main, None)`` as ``forward_train`` returns for a model without PGI).
    ``targets``: ``(M, 6)`` rows ``[batch_index, class, x1, y1, x2, y2]`` in network-input
    pixels. ``total``: scalar to backpropagate (weighted parts summed, times batch size).
    ``items``: detached ``[box, cls, dfl]`` after gains, per image (not times batch size).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        strides: Sequence[int] = (8, 16, 32),
        reg_max: int = 16,
        gains: LossGains = LossGains(),  # noqa: B008 (frozen dataclass: safe default)
        label_smoothing: float = 0.0,
        topk: int = 10,
        alpha: float = 0.5,
        beta: float = 6.0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.num_classes = num_classes
        self.strides = tuple(int(s) for s in strides)
        self.reg_max = reg_max
        self.gains = gains
        self.label_smoothing = label_smoothing
        self.assigner = TaskAlignedAssigner(topk=topk, alpha=alpha, beta=beta)

    def forward(self, outputs: Any, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        main, aux = _split_heads(outputs)
        if aux is not None:
            raise ValueError(
                "outputs carry an auxiliary (PGI) head: use DualDetectionLoss or build_loss(model)"
            )
        parts, batch = self.head_loss(main, targets)
        return parts.sum() * batch, parts.detach()

    def head_loss(self, outputs: LevelOutputs, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Weighted ``[box, cls, dfl]`` (with grad) of one head, and the batch size."""
        self._check_outputs(outputs)
        device_type = outputs[0][0].device.type
        # Under AMP the decode (einsum) would otherwise run in half precision: assignment and
        # losses are computed in float32.
        with torch.autocast(device_type, enabled=False):
            return self._head_loss(outputs, targets)

    def _head_loss(self, outputs: LevelOutputs, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
        shapes = [tuple(box.shape[2:]) for box, _ in outputs]
        box_logits, cls_logits = flatten_outputs(list(outputs))
        box_logits, cls_logits = box_logits.float(), cls_logits.float()
        batch = box_logits.shape[0]
        device = box_logits.device

        points, stride_col = make_anchors(shapes, self.strides, device, torch.float32)
        pred_dist = dfl_distances(box_logits, self.reg_max).transpose(1, 2)  # (B,A,4) strides
        pred_boxes = dist_to_xyxy(pred_dist * stride_col, points)  # (B,A,4) pixels
        cls_logits = cls_logits.transpose(1, 2)  # (B,A,nc)

        gt_labels, gt_boxes, gt_mask = self._pad_targets(targets, batch, device)
        assigned = self.assigner(
            cls_logits.detach().sigmoid(), pred_boxes.detach(), points, gt_labels, gt_boxes, gt_mask
        )
        score_sum = assigned.target_scores.sum().clamp(min=1.0)

        cls_targets = assigned.target_scores
        if self.label_smoothing:
            # Smooth the one-hot class vector of positives (each class is a binary problem,
            # so eps/2 goes to both sides); weights and normaliser stay unsmoothed.
            eps = self.label_smoothing
            weight = cls_targets.sum(-1, keepdim=True)
            cls_targets = cls_targets * (1 - eps) + weight * (eps / 2)
        loss_cls = F.binary_cross_entropy_with_logits(cls_logits, cls_targets, reduction="sum")
        loss_cls = loss_cls / score_sum

        loss_box, loss_dfl = self._box_losses(
            box_logits, pred_boxes, points, stride_col, assigned, score_sum
        )
        parts = torch.stack(
            (loss_box * self.gains.box, loss_cls * self.gains.cls, loss_dfl * self.gains.dfl)
        )
        return parts, batch

    def _box_losses(
        self,
        box_logits: torch.Tensor,
        pred_boxes: torch.Tensor,
        points: torch.Tensor,
        stride_col: torch.Tensor,
        assigned: Assignment,
        score_sum: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CIoU and DFL losses over positive anchors (zero when there are none)."""
        fg = assigned.fg_mask
        if not fg.any():
            zero = box_logits.sum() * 0.0  # keeps the graph connected for DDP
            return zero, zero
        weight = assigned.target_scores.sum(-1)[fg]  # (P,)
        target = assigned.target_boxes[fg]  # (P,4) pixels
        loss_box = ((1.0 - box_ciou(pred_boxes[fg], target)) * weight).sum() / score_sum

        # DFL: LTRB target distances in stride units, split between the two nearest bins.
        b_idx, a_idx = fg.nonzero(as_tuple=True)
        anchor = points[a_idx]
        stride = stride_col[a_idx]
        dist = torch.cat((anchor - target[:, :2], target[:, 2:] - anchor), -1) / stride
        logits = box_logits[b_idx, :, a_idx].view(-1, 4, self.reg_max)  # (P,4,reg_max)
        dfl = distribution_focal_loss(logits, dist).mean(-1)  # (P,)
        loss_dfl = (dfl * weight).sum() / score_sum
        return loss_box, loss_dfl

    def _check_outputs(self, outputs: LevelOutputs) -> None:
        if len(outputs) != len(self.strides):
            raise ValueError(
                f"expected {len(self.strides)} output levels (strides {self.strides}), "
                f"got {len(outputs)}"
            )
        for i, (box, cls) in enumerate(outputs):
            if box.ndim != 4 or box.shape[1] != 4 * self.reg_max:
                raise ValueError(
                    f"level {i}: box logits must be (B, {4 * self.reg_max}, H, W), "
                    f"got {tuple(box.shape)}"
                )
            if cls.ndim != 4 or cls.shape[1] != self.num_classes or cls.shape[2:] != box.shape[2:]:
                raise ValueError(
                    f"level {i}: class logits must be (B, {self.num_classes}, "
                    f"{box.shape[2]}, {box.shape[3]}), got {tuple(cls.shape)}"
                )

    def _pad_targets(
        self, targets: torch.Tensor, batch: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(M, 6)`` rows -> per-image padded labels, boxes and valid mask (``B, Mmax``)."""
        targets = torch.as_tensor(targets, device=device, dtype=torch.float32)
        if targets.numel() == 0:
            targets = targets.reshape(0, 6)
        if targets.ndim != 2 or targets.shape[1] != 6:
            raise ValueError(
                "targets must be (M, 6) rows [batch_index, class, x1, y1, x2, y2], "
                f"got shape {tuple(targets.shape)}"
            )
        if not torch.isfinite(targets).all():
            raise ValueError("targets contain NaN or infinite values")
        image_idx = targets[:, 0].long()
        labels = targets[:, 1].long()
        if len(targets) and (image_idx.min() < 0 or image_idx.max() >= batch):
            raise ValueError(f"target batch_index out of range [0, {batch}): {image_idx.tolist()}")
        if len(targets) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"target class out of range [0, {self.num_classes}): {labels.unique().tolist()}"
            )

        counts = torch.bincount(image_idx, minlength=batch)
        m = int(counts.max()) if len(targets) else 0
        gt_labels = torch.zeros(batch, m, dtype=torch.long, device=device)
        gt_boxes = torch.zeros(batch, m, 4, device=device)
        gt_mask = torch.zeros(batch, m, dtype=torch.bool, device=device)
        if m:
            order = torch.sort(image_idx, stable=True).indices
            image_idx, labels, boxes = image_idx[order], labels[order], targets[order, 2:]
            first = torch.cumsum(counts, 0) - counts  # first row of each image after sorting
            slot = torch.arange(len(order), device=device) - first[image_idx]
            gt_labels[image_idx, slot] = labels
            gt_boxes[image_idx, slot] = boxes
            # Degenerate (zero-area) boxes cannot contain an anchor point: leave them out.
            gt_mask[image_idx, slot] = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return gt_labels, gt_boxes, gt_mask


class DualDetectionLoss(DetectionLoss):
    """PGI loss: ``main + aux_weight * aux``, each head with its own task-aligned assignment.

    Called as ``loss((main, aux), targets)``; with ``aux is None`` it is the plain loss.
    ``items`` is ``main_items + aux_weight * aux_items`` (what ``total`` is made of).
    """

    def __init__(self, num_classes: int, aux_weight: float = 0.25, **kwargs: Any) -> None:
        super().__init__(num_classes, **kwargs)
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
        self.aux_weight = aux_weight

    def forward(self, outputs: Any, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        main, aux = _split_heads(outputs)
        parts, batch = self.head_loss(main, targets)
        if aux is not None:
            aux_parts, _ = self.head_loss(aux, targets)
            parts = parts + self.aux_weight * aux_parts
        return parts.sum() * batch, parts.detach()


def build_loss(model: nn.Module, **kwargs: Any) -> DetectionLoss:
    """The loss a model trains with: :class:`DualDetectionLoss` when it has a PGI branch.

    ``kwargs`` go to the loss (``gains``, ``label_smoothing``, ``topk``, ...); classes,
    strides and reg_max come from the model (DDP/EMA wrappers are unwrapped).
    """
    inner = getattr(model, "module", model)
    config = getattr(inner, "config", None)
    has_aux = getattr(inner, "aux", None) is not None or bool(getattr(config, "pgi", False))
    common = {
        "strides": tuple(inner.strides),
        "reg_max": int(inner.reg_max),
        **kwargs,
    }
    if has_aux:
        return DualDetectionLoss(int(inner.num_classes), **common)
    common.pop("aux_weight", None)
    return DetectionLoss(int(inner.num_classes), **common)
