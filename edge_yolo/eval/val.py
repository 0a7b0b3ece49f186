"""The one evaluation path: detections from a ``Detector``, scored by :func:`.coco.evaluate`.

A checkpoint (during training, ``edge-yolo val``, the report's float baseline) and an exported
bundle are evaluated by the same loop: the runtime ``Detector`` letterboxes, runs the network
and post-processes with the numpy code every device runs, under one set of evaluation
settings (:data:`EVAL`), so an FP32 export scores exactly what its float model scores.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EdgeYoloError
from .coco import EvalResult, GroundTruth, Prediction, evaluate

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSettings:
    """Detection thresholds for scoring: a low ``conf`` so the precision-recall curve is
    complete, NMS IoU 0.7 as in the YOLO evaluators, at most ``max_det`` boxes per image."""

    conf: float = 0.001
    iou: float = 0.7
    max_det: int = 300

    def __str__(self) -> str:
        return f"conf {self.conf:g}, NMS IoU {self.iou:g}, max {self.max_det} detections/image"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The settings every evaluation uses unless a caller states others.
EVAL = EvalSettings()


class ValidationError(EdgeYoloError, ValueError):
    """A model and a dataset that cannot be evaluated together; names both."""


def _progress(items: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a host extra: a device install evaluates without a bar
        return items
    return tqdm(items, total=total, desc=desc, unit="img")


def _samples(dataset: Any) -> Iterator[Any]:
    """Every readable sample: our datasets' iterator skips an image that fails to decode and
    counts it in ``dataset.report``, so one corrupt file cannot abort an evaluation."""
    if hasattr(dataset, "__iter__"):
        yield from dataset
    else:
        yield from (dataset[i] for i in range(len(dataset)))


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def resamples_of(n: int, resamples: int, seed: int = 0) -> list[np.ndarray]:
    """The bootstrap's image indices: ``resamples`` draws of n images with replacement."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, n) for _ in range(resamples)]


@dataclass
class Collected:
    """Per-image detections of one model on a dataset, with the ground truth, in order."""

    predictions: list[Prediction]
    ground_truths: list[GroundTruth]
    paths: list[str]
    skipped: list[str]  # "path: reason" of images the Detector refused
    names: list[str]

    def evaluate(self, indices: Any = None) -> EvalResult:
        """COCO metrics over every image, or over ``indices`` (repeats allowed: a bootstrap
        resample)."""
        if indices is None:
            result = evaluate(self.predictions, self.ground_truths, self.names)
            result.skipped = list(self.skipped)
            return result
        return evaluate([self.predictions[i] for i in indices],
                        [self.ground_truths[i] for i in indices], self.names)


def collect(
    detector: Any,
    dataset: Any,
    *,
    settings: EvalSettings = EVAL,
    batch_size: int = 8,
    progress: bool = True,
) -> Collected:
    """Run a runtime ``Detector`` over a dataset under ``settings`` (the detector's own
    thresholds are put back afterwards); an image it refuses is skipped and counted."""
    names = list(dataset.names)
    if len(detector.names) != len(names):
        raise ValidationError(
            f"{detector.path}: the model predicts {len(detector.names)} classes but the dataset "
            f"has {len(names)}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    saved = detector.conf, detector.iou, detector.max_det
    detector.conf, detector.iou, detector.max_det = settings.conf, settings.iou, settings.max_det
    out = Collected([], [], [], [], names)
    try:
        bar = _progress(_samples(dataset), len(dataset), "evaluate", progress)
        for samples in _chunks(bar, batch_size):
            for sample, det in _detect(detector, samples, out.skipped):
                out.predictions.append((det.xyxy, det.scores, det.class_ids))
                out.ground_truths.append(
                    (np.asarray(sample.boxes, np.float32).reshape(-1, 4),
                     np.asarray(sample.classes, np.int64))
                )
                out.paths.append(str(sample.path))
    finally:
        detector.conf, detector.iou, detector.max_det = saved
    if out.skipped and not out.predictions:
        raise ValidationError(
            f"no image could be evaluated ({len(out.skipped)} skipped, e.g. {out.skipped[0]})"
        )
    return out


def evaluate_detector(detector: Any, dataset: Any, **options: Any) -> EvalResult:
    """COCO metrics of a runtime ``Detector`` on a dataset; ``options`` as :func:`collect`'s
    (``settings``, ``batch_size``, ``progress``)."""
    return collect(detector, dataset, **options).evaluate()


def _detect(detector: Any, samples: list[Any], skipped: list[str]) -> list[tuple[Any, Any]]:
    """``(sample, detections)`` of a chunk; an image the Detector refuses (too thin for the
    input, say) is skipped, logged and counted, so one such image cannot end an evaluation
    (or the training epoch that runs it)."""
    from ..runtime.processing import ImageError

    try:
        return list(zip(samples, detector.batch([s.image for s in samples])))
    except ImageError:
        pass
    out = []
    for sample in samples:
        try:
            out.append((sample, detector(sample.image)))
        except ImageError as e:
            reason = str(e).split(": ", 1)[-1]
            LOGGER.warning("%s: skipped in evaluation (%s)", sample.path, reason)
            skipped.append(f"{sample.path}: {reason}")
    return out


def evaluate_model(
    model: Any,
    dataset: Any,
    *,
    imgsz: int = 640,
    settings: EvalSettings = EVAL,
    batch_size: int = 8,
    progress: bool = True,
) -> EvalResult:
    """A PyTorch model (its main head; a copy is fused, the model itself is left as it is),
    evaluated through the same ``Detector`` path as an exported artifact."""
    from ..runtime.detector import Detector

    inner = getattr(model, "module", model)  # a DDP wrapper's forward would sync ranks
    if int(inner.num_classes) != len(dataset.names):
        raise ValidationError(
            f"model {getattr(inner, 'name', '')!r} predicts {inner.num_classes} classes but the "
            f"dataset has {len(dataset.names)}"
        )
    param = next(inner.parameters())
    detector = Detector.from_model(
        inner, imgsz=imgsz, names=list(dataset.names), device=str(param.device)
    )
    return evaluate_detector(
        detector, dataset, settings=settings, batch_size=batch_size, progress=progress
    )


def validate(
    weights: str | os.PathLike,
    data: str,
    *,
    split: str = "val",
    imgsz: int | None = None,
    batch: int = 8,
    device: str | None = None,
    threads: int | None = None,
    fuse: bool = True,
    max_images: int | None = None,
    settings: EvalSettings = EVAL,
    progress: bool = True,
) -> tuple[EvalResult, dict[str, Any]]:
    """Score a checkpoint (``.pt``: PGI branch dropped, fused, as it deploys) or an exported
    bundle / model file on a dataset split; returns the result and what was evaluated."""
    from ..data import FirstN, load_dataset, spec_kwargs

    path = Path(weights)
    if path.suffix == ".pt":
        from ..models import load_model
        from ..train.distributed import select_device

        model, ckpt = load_model(path)
        imgsz = imgsz or int(ckpt.get("imgsz", 640))
        trained_as = model.name
        if model.aux is not None:
            model.drop_auxiliary()
        if fuse:
            model.fuse()
        model = model.to(select_device(device)).eval()
        info = {"kind": "checkpoint", "trained_as": trained_as, "model": model.name,
                "fused": fuse}
        detector = None
    else:
        from ..runtime.detector import Detector

        detector = Detector(path, device=device, threads=threads)
        imgsz = detector.imgsz[0]
        m = detector.meta
        info = {"kind": "bundle", "model": m.model, "target": m.target,
                "precision": m.precision, "backend": detector.backend.name}
    dataset = load_dataset(data, split=split, **spec_kwargs(data, imgsz))
    n_classes = len(detector.names) if detector is not None else model.num_classes
    if len(dataset.names) != n_classes:
        raise ValidationError(
            f"{weights}: the model predicts {n_classes} classes but {data} has "
            f"{len(dataset.names)} ({', '.join(dataset.names[:5])}"
            f"{', ...' if len(dataset.names) > 5 else ''})"
        )
    if max_images:
        dataset = FirstN(dataset, max_images)
    if detector is None:
        result = evaluate_model(model, dataset, imgsz=imgsz, settings=settings,
                                batch_size=batch, progress=progress)
    else:
        result = evaluate_detector(detector, dataset, settings=settings, batch_size=batch,
                                   progress=progress)
    info.update(weights=str(weights), imgsz=imgsz, data=data, split=split,
                images=result.num_images, settings=settings.to_dict())
    return result, info
