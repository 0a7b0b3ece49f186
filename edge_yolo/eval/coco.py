"""COCO-protocol detection metrics through faster-coco-eval (a pycocotools-compatible evaluator).

:func:`evaluate` scores per-image detections in original-image pixels against ground truth.
What produces the detections (a checkpoint or an exported artifact, always through the
runtime ``Detector``) is :mod:`edge_yolo.eval.val`.

Protocol: bbox IoU thresholds 0.50:0.05:0.95, 101-point interpolated precision, area range
"all", the ``max_dets`` (COCO: 100) best detections per image and class (as pycocotools reads
a results file), every ground-truth box counted (``iscrowd = 0``, ``area`` = box area).
Classes without a ground-truth box are left out of the mean, as COCO does, and their
per-class AP is NaN (``None`` in :meth:`EvalResult.to_dict`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Prediction = tuple[np.ndarray, np.ndarray, np.ndarray]  # xyxy (N, 4), scores (N,), class_ids (N,)
GroundTruth = tuple[np.ndarray, np.ndarray]  # xyxy (M, 4), class_ids (M,)


@dataclass
class EvalResult:
    """COCO metrics of one evaluation. Per-class values are NaN for classes without GT."""

    map50_95: float
    map50: float
    per_class: dict[str, float]  # AP50-95 per class name
    num_images: int
    num_targets: int
    per_class_ap50: dict[str, float] = field(default_factory=dict)
    per_class_targets: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # "path: reason" of images not evaluated

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; NaN (class without ground truth) becomes ``None``."""

        def clean(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return {
            "map50_95": clean(self.map50_95),
            "map50": clean(self.map50),
            "num_images": self.num_images,
            "num_targets": self.num_targets,
            "per_class": {k: clean(v) for k, v in self.per_class.items()},
            "per_class_ap50": {k: clean(v) for k, v in self.per_class_ap50.items()},
            "per_class_targets": dict(self.per_class_targets),
            "skipped": list(self.skipped),
        }

    def __str__(self) -> str:
        lines = [
            f"mAP50-95 {self.map50_95:.4f}  mAP50 {self.map50:.4f}  "
            f"({self.num_images} images, {self.num_targets} targets"
            + (f"; {len(self.skipped)} images skipped" if self.skipped else "")
            + ")"
        ]
        if self.per_class:
            width = max(12, *(len(n) for n in self.per_class))
            lines.append(f"  {'class':<{width}} {'targets':>8} {'AP50-95':>8} {'AP50':>8}")
            for name, ap in self.per_class.items():
                ap50 = self.per_class_ap50.get(name, math.nan)
                n = self.per_class_targets.get(name, 0)
                lines.append(f"  {name:<{width}} {n:>8d} {ap:>8.4f} {ap50:>8.4f}")
        return "\n".join(lines)


def _check_boxes(boxes: Any, what: str, i: int) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{what} of image {i}: boxes must be (N, 4) xyxy, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} of image {i}: boxes contain NaN or infinite values")
    return arr


def _check_ids(ids: Any, n: int, num_classes: int, what: str, i: int) -> np.ndarray:
    arr = np.asarray(ids).reshape(-1)
    if len(arr) != n:
        raise ValueError(f"{what} of image {i}: {n} boxes but {len(arr)} class ids")
    if n and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(
            f"{what} of image {i}: class ids must be in [0, {num_classes}), got {np.unique(arr)}"
        )
    return arr.astype(np.int64)


def _quiet(*args: Any, **kwargs: Any) -> None:
    """The evaluator's progress chatter goes nowhere; results are returned, not printed."""


def _xywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate((boxes[:, :2], boxes[:, 2:] - boxes[:, :2]), 1)


def evaluate(
    predictions: Sequence[Prediction],
    ground_truths: Sequence[GroundTruth],
    names: Sequence[str],
    *,
    max_dets: int = 100,
) -> EvalResult:
    """COCO mAP50-95, mAP50 and per-class AP of per-image detections against ground truth.

    ``predictions[i] = (xyxy (N, 4), scores (N,), class_ids (N,))`` and
    ``ground_truths[i] = (xyxy (M, 4), class_ids (M,))`` for the same image ``i``, in the
    same pixel space. ``max_dets``: detections per image and class the protocol considers
    (COCO: 100).
    """
    from faster_coco_eval import COCO, COCOeval_faster

    if len(predictions) != len(ground_truths):
        raise ValueError(
            f"{len(predictions)} predictions for {len(ground_truths)} ground-truth images"
        )
    if max_dets < 1:
        raise ValueError(f"max_dets must be >= 1, got {max_dets}")
    names = [str(n) for n in names]
    nc = len(names)
    if nc == 0:
        raise ValueError("names is empty: need at least one class")

    images, gt_anns, dt_anns = [], [], []
    targets_per_class = np.zeros(nc, np.int64)
    for i, (gt, pred) in enumerate(zip(ground_truths, predictions)):
        image_id = i + 1  # COCO ids start at 1 (0 reads as "unmatched" inside the evaluator)
        images.append({"id": image_id})
        gt_boxes = _check_boxes(gt[0], "ground truth", i)
        gt_cls = _check_ids(gt[1], len(gt_boxes), nc, "ground truth", i)
        np.add.at(targets_per_class, gt_cls, 1)
        for (x, y, w, h), c in zip(_xywh(gt_boxes).tolist(), gt_cls.tolist()):
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,
                    "image_id": image_id,
                    "category_id": c + 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        dt_boxes = _check_boxes(pred[0], "predictions", i)
        scores = np.asarray(pred[1], dtype=np.float64).reshape(-1)
        if len(scores) != len(dt_boxes):
            raise ValueError(
                f"predictions of image {i}: {len(dt_boxes)} boxes but {len(scores)} scores"
            )
        dt_cls = _check_ids(pred[2], len(dt_boxes), nc, "predictions", i)
        for (x, y, w, h), s, c in zip(_xywh(dt_boxes).tolist(), scores.tolist(), dt_cls.tolist()):
            dt_anns.append(
                {"image_id": image_id, "category_id": c + 1, "bbox": [x, y, w, h], "score": s}
            )

    categories = [{"id": k + 1, "name": n} for k, n in enumerate(names)]
    coco_gt = COCO(
        {"images": images, "annotations": gt_anns, "categories": categories},
        print_function=_quiet,
    )
    coco_dt = coco_gt.loadRes(dt_anns)
    coco_eval = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=_quiet)
    coco_eval.params.maxDets = [1, 10, int(max_dets)]
    coco_eval.evaluate()
    coco_eval.accumulate()

    # precision: (iou thresholds, recall thresholds, classes, area ranges, max dets);
    # -1 marks a class without ground truth. Area range 0 is "all", last max-dets is ours.
    precision = np.asarray(coco_eval.eval["precision"])[:, :, :, 0, -1]
    iou_thrs = np.asarray(coco_eval.params.iouThrs)
    at50 = int(np.argmin(np.abs(iou_thrs - 0.5)))
    has_gt = (precision > -1).all(axis=(0, 1))  # (K,)
    ap = np.where(has_gt, precision.mean(axis=(0, 1)), np.nan)
    ap50 = np.where(has_gt, precision[at50].mean(axis=0), np.nan)
    return EvalResult(
        map50_95=float(ap[has_gt].mean()) if has_gt.any() else math.nan,
        map50=float(ap50[has_gt].mean()) if has_gt.any() else math.nan,
        per_class={n: float(v) for n, v in zip(names, ap)},
        num_images=len(images),
        num_targets=int(targets_per_class.sum()),
        per_class_ap50={n: float(v) for n, v in zip(names, ap50)},
        per_class_targets={n: int(v) for n, v in zip(names, targets_per_class)},
    )
