"""Fidelity: how far a quantized model finds what the float model finds, on any images.

Ground-truth mAP on a small labeled val set cannot tell a 0.5-point drop from noise: every
image carries the labelers' and the model's own errors, and there are few images. Fidelity
asks a narrower question that needs no labels: take the float model's own confident
detections (score >= :data:`REFERENCE_CONF`, the boxes a user sees) as the reference, and
score the other model's detections (those scoring >= :data:`CANDIDATE_CONF`) against them
with the same COCO evaluator as everything else. The float model against itself scores
exactly 100; a drop below 100 is what quantization or conversion changed. Because it needs
no labels it can run on as many images as the user has (a folder, a video's frames), and
its interval narrows as they are added.

The interval is a paired bootstrap over images (the same resamples for every row): the float
model's fidelity is 100 on every resample, so the drop's interval is the row's own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .coco import GroundTruth
from .val import Collected, resamples_of

#: the float model's detections at or above this score are the reference (what a user sees)
REFERENCE_CONF = 0.25
#: a row's detections below this score are left out: no user threshold shows them, and
#: without the long tail of 0.001-scored boxes a bootstrap resample evaluates ~10x faster.
#: The float model keeps every reference box (>= REFERENCE_CONF), so it still scores 100.
CANDIDATE_CONF = 0.01


@dataclass
class Fidelity:
    """One row's fidelity to the float model, in points (100: the float model's boxes)."""

    score: float  # mAP50-95 against the reference, x 100
    ci: tuple[float, float]  # 95 % bootstrap interval of score - 100
    images: int
    reference_boxes: int
    #: score - 100 on each bootstrap resample (the same resamples for every row: pairs)
    resampled: list[float] = field(default_factory=list, repr=False)

    @property
    def drop(self) -> float:
        """Points below the float model (positive: a drop)."""
        return 100.0 - self.score


def reference(base: Collected, conf: float = REFERENCE_CONF) -> list[GroundTruth]:
    """The float model's boxes at or above ``conf``, per image, as ground truth."""
    out = []
    for boxes, scores, classes in base.predictions:
        keep = np.asarray(scores) >= conf
        out.append((np.asarray(boxes, np.float32)[keep].reshape(-1, 4),
                    np.asarray(classes, np.int64)[keep]))
    return out


class FidelityScorer:
    """Scores rows against one float model's reference; ``score(other, indices)`` for a
    bootstrap resample (repeats allowed)."""

    def __init__(self, base: Collected, conf: float = REFERENCE_CONF) -> None:
        self.base = base
        self.conf = conf
        self.reference = reference(base, conf)
        self.reference_boxes = int(sum(len(c) for _, c in self.reference))

    def score(self, other: Collected, indices: Sequence[int] | None = None) -> float:
        """mAP50-95 x 100 of ``other`` against the reference (NaN without reference boxes)."""
        return self._score(self._candidates(other), indices)

    def _candidates(self, other: Collected) -> list[Any]:
        """``other``'s detections scoring >= :data:`CANDIDATE_CONF`, per image."""
        if other.paths != self.base.paths:
            raise ValueError("fidelity: the two models did not see the same images")
        out = []
        for boxes, scores, classes in other.predictions:
            keep = np.asarray(scores) >= CANDIDATE_CONF
            out.append((np.asarray(boxes)[keep], np.asarray(scores)[keep],
                        np.asarray(classes)[keep]))
        return out

    def _score(self, candidates: list[Any], indices: Sequence[int] | None = None) -> float:
        from .coco import evaluate

        if not self.reference_boxes:
            return math.nan
        idx = range(len(self.reference)) if indices is None else indices
        result = evaluate([candidates[i] for i in idx], [self.reference[i] for i in idx],
                          self.base.names)
        return 100.0 * result.map50_95

    def measure(self, other: Collected, resamples: int = 200, seed: int = 0) -> Fidelity:
        """The score on every image and its 95 % paired-bootstrap interval (as score - 100)."""
        candidates = self._candidates(other)
        score = self._score(candidates)
        resampled = [self._score(candidates, idx) - 100.0
                     for idx in resamples_of(len(self.reference), resamples, seed)]
        drops = [d for d in resampled if not math.isnan(d)]
        lo, hi = np.percentile(drops, [2.5, 97.5]) if drops else (math.nan, math.nan)
        return Fidelity(score, (float(lo), float(hi)), len(self.reference),
                        self.reference_boxes, resampled)


def difference_interval(a: Fidelity, b: Fidelity) -> tuple[float, float]:
    """95 % interval of ``a.score - b.score`` from the paired resamples: apart when it
    excludes 0."""
    pairs = [x - y for x, y in zip(a.resampled, b.resampled)
             if not (math.isnan(x) or math.isnan(y))]
    if not pairs:
        return (math.nan, math.nan)
    lo, hi = np.percentile(pairs, [2.5, 97.5])
    return float(lo), float(hi)


def measure_all(base: Collected, others: list[Collected], resamples: int = 200,
                conf: float = REFERENCE_CONF, workers: int | None = None) -> list[Fidelity]:
    """:meth:`FidelityScorer.measure` of every row, spread over processes like the report's
    mAP intervals (each COCO evaluation is single-threaded)."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    workers = min(len(others), workers or os.cpu_count() or 1)
    if workers <= 1 or resamples == 0:
        scorer = FidelityScorer(base, conf)
        return [scorer.measure(o, resamples) for o in others]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(_measure_one, base, o, resamples, conf) for o in others]
        return [job.result() for job in jobs]


def _measure_one(base: Collected, other: Collected, resamples: int, conf: float) -> Fidelity:
    return FidelityScorer(base, conf).measure(other, resamples)
