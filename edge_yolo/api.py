"""The command line's main jobs as Python functions, for notebooks and scripts::

    import edge_yolo

    run = edge_yolo.train(model="yolov9-t", data="synthetic:400", epochs=30, imgsz=320)
    print(run.best, run.final["map50_95"])              # paths and metrics
    bundle = edge_yolo.export(run.best, "rpi5", calib="synthetic:400")
    print(bundle.path, bundle.meta.accuracy["top_class_agreement"])
    print(edge_yolo.val(bundle, "synthetic:400").map50_95)

Each takes the command's options as keywords (a flag's name with ``_`` for ``-``: ``lr0``,
``close_mosaic``, ``calib_size``), goes through the same code as the command, and raises the
same :class:`~edge_yolo.errors.EdgeYoloError` subclasses the command prints as one line (their
messages name options as keywords here). Host side: these import torch when called.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .eval.coco import EvalResult
    from .runtime.bundle import BundleMeta
    from .train.loop import TrainResult


def train(
    model: str | None = None,
    data: str | None = None,
    *,
    recipe: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    exist_ok: bool = False,
    **options: Any,
) -> TrainResult:
    """``edge-yolo train``: train or fine-tune; returns where the run left ``last.pt`` and
    ``best.pt``, its per-epoch history and the final score of ``best.pt`` as deployed.
    ``options`` are :class:`~edge_yolo.train.config.TrainConfig` fields (``epochs``,
    ``imgsz``, ``batch``, ``weights``, ``out``, ...); an unknown one is refused by name."""
    from .train.config import plan_run
    from .train.loop import train as run_training

    cfg, point = plan_run(recipe, {"model": model, "data": data, **options}, resume, exist_ok)
    return run_training(cfg, resume=point)


@dataclass(frozen=True)
class ExportResult:
    """A bundle just written: its directory (the object is also usable as that path) and
    its metadata (precision, calibration, ``accuracy``: agreement with the float model)."""

    path: Path
    meta: BundleMeta

    def __fspath__(self) -> str:
        return str(self.path)

    def summary(self) -> str:
        """The lines ``edge-yolo export`` prints."""
        from .export.readme import console_summary

        return console_summary(self.path, self.meta)


def export(weights: str | os.PathLike, target: str, **options: Any) -> ExportResult:
    """``edge-yolo export``: a checkpoint to a target's (or a board's) bundle, through
    :func:`edge_yolo.export.export`. ``options``: ``precision``, ``imgsz``, ``calib``, ``out``
    (default ``exports``) and the :class:`~edge_yolo.export.ExportOptions` fields
    (``calib_size``, ``max_drop``, ``force``, ``name``, ``threads``, ...)."""
    from .export import export as run_export
    from .runtime.bundle import BundleMeta

    path = run_export(weights, target, **options)
    return ExportResult(Path(path), BundleMeta.read(path))


def val(weights: str | os.PathLike, data: str, **options: Any) -> EvalResult:
    """``edge-yolo val``: COCO mAP50-95 / mAP50 and per-class AP of a checkpoint (scored as it
    deploys) or a bundle, through the Detector's pre/post-processing. ``options``: ``split``,
    ``imgsz``, ``batch``, ``device``, ``threads``, ``max_images``, ``progress``, ..."""
    from .eval.val import validate

    result, _ = validate(os.fspath(weights), data, **options)
    return result
