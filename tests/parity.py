"""The parity rules every comparison of detections uses: an exported artifact against the torch
model (``test_backends_contract``), another runtime or an emulated board against this host.
Tolerances by precision; see ``test_backends_contract`` for what they were set from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_yolo.runtime import Detections

CONF = 0.05  # low, so low-score boxes are compared too


@dataclass(frozen=True)
class Tolerance:
    min_iou: float  # a matched pair overlaps at least this much
    matched: float  # fraction of boxes scoring >= count_above that are matched, both directions
    count_above: float = CONF  # boxes near CONF may cross it under quantization noise
    score_max: float | None = None  # max |score diff| over matched pairs
    score_mae: float | None = None  # mean |score diff| over matched pairs


TOLERANCES = {
    "fp32": Tolerance(min_iou=0.95, matched=1.0, score_max=0.01),
    "fp16": Tolerance(min_iou=0.90, matched=0.9, count_above=0.1, score_max=0.03),
    "int8": Tolerance(min_iou=0.50, matched=0.8, count_above=0.25, score_mae=0.12),
}


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), 2)
    area_a = np.prod(a[:, 2:] - a[:, :2], 1)
    area_b = np.prod(b[:, 2:] - b[:, :2], 1)
    return inter / (area_a[:, None] + area_b[None] - inter)


def match(ref: Detections, got: Detections, min_iou: float) -> list[tuple[int, int, float]]:
    """Greedy: each reference box (best score first) takes the free same-class box it overlaps
    most, if that overlap reaches ``min_iou``. Returns ``(ref_index, got_index, iou)``."""
    if not len(ref) or not len(got):
        return []
    ious = iou_matrix(ref.xyxy, got.xyxy)
    ious[ref.class_ids[:, None] != got.class_ids[None, :]] = -1.0
    pairs, free = [], np.ones(len(got), bool)
    for i in np.argsort(-ref.scores, kind="stable"):
        cand = np.where(free, ious[i], -1.0)
        j = int(cand.argmax())
        if cand[j] >= min_iou:
            free[j] = False
            pairs.append((int(i), j, float(cand[j])))
    return pairs


def assert_agree(reference: list[Detections], got: list[Detections], precision: str,
                 label: str) -> str:
    """Detections of the same images agree under ``TOLERANCES[precision]``: boxes matched
    greedily (same class, IoU), both ways, and their scores close. Returns the summary."""
    tol = TOLERANCES[precision]
    n_ref = n_got = hit_ref = hit_got = 0
    score_diff: list[float] = []
    for ref, new in zip(reference, got, strict=True):
        pairs = match(ref, new, tol.min_iou)
        score_diff += [abs(float(ref.scores[i]) - float(new.scores[j])) for i, j, _ in pairs]
        n_ref += int((ref.scores >= tol.count_above).sum())
        n_got += int((new.scores >= tol.count_above).sum())
        hit_ref += sum(ref.scores[i] >= tol.count_above for i, _, _ in pairs)
        hit_got += sum(new.scores[j] >= tol.count_above for _, j, _ in pairs)
    assert n_ref >= len(reference)  # the model finds the raccoons: something to compare
    summary = (
        f"{label}: boxes scoring >= {tol.count_above} matched at IoU >= {tol.min_iou}: "
        f"reference {hit_ref}/{n_ref}, compared {hit_got}/{n_got}; score diff max "
        f"{max(score_diff, default=0):.4f} mean {np.mean(score_diff) if score_diff else 0:.4f}"
    )
    assert hit_ref >= tol.matched * n_ref and hit_got >= tol.matched * n_got, summary
    if tol.score_max is not None:
        assert max(score_diff) <= tol.score_max, summary
    if tol.score_mae is not None:
        assert np.mean(score_diff) <= tol.score_mae, summary
    return summary
