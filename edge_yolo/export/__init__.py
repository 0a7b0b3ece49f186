"""Export a checkpoint to a target's artifact bundle (host side: imports torch on use).

``export("best.pt", "intel", precision="int8", calib="data.yaml")`` -> bundle directory.
Targets, precisions and options: :mod:`.targets` (the capability table); the exporter
interface a target implements: :mod:`.base`; the shared steps: :mod:`.pipeline`. The package is
callable: ``edge_yolo.export(weights, target, ...)`` is :func:`edge_yolo.api.export` (the same,
returning the path with the bundle's metadata).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..callable_module import make_callable
from .base import Artifact, Exporter, ExportError, ExportOptions
from .job import ExportJob
from .pipeline import run_export
from .targets import (
    TARGETS,
    DeviceProfile,
    TargetError,
    TargetSpec,
    capability_table,
    check_target,
    list_devices,
    load_device,
    resolve,
)


def export(
    weights: str | os.PathLike,
    target: str,
    *,
    precision: str | None = None,
    imgsz: int | None = None,
    calib: str | None = None,
    out: str | os.PathLike = "exports",
    **options: Any,
) -> Path:
    """Export ``weights`` for ``target`` (a target or a board); returns the bundle directory.

    Extra keyword arguments are :class:`ExportOptions` fields (``calib_size``, ``dynamic``,
    ``name``, ``target_options``, ...).
    """
    opts = ExportOptions(
        target=target, precision=precision, imgsz=imgsz, calib=calib, out=out, **options
    )
    return run_export(weights, opts)


make_callable(__name__, "export")

__all__ = [
    "TARGETS",
    "Artifact",
    "DeviceProfile",
    "ExportError",
    "ExportJob",
    "ExportOptions",
    "Exporter",
    "TargetError",
    "TargetSpec",
    "capability_table",
    "check_target",
    "export",
    "list_devices",
    "load_device",
    "resolve",
    "run_export",
]
