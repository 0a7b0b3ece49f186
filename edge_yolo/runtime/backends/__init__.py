"""Runtime backends, imported on first use (the table of them: ``edge_yolo.contract.BACKENDS``)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from ...contract import BACKENDS, SUFFIXES
from ..bundle import BundleError, BundleMeta
from .base import Backend, BackendError, default_threads


def get_backend(name: str) -> type[Backend]:
    """The backend class registered under ``name`` (its module imported now)."""
    try:
        target = BACKENDS[name].target
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def read_metadata(model_file: str | os.PathLike) -> BundleMeta:
    """The metadata embedded in a lone model file, read by the backend of its format."""
    path = Path(model_file)
    name = SUFFIXES.get(path.suffix.lower())
    if name is None:
        raise BundleError(
            f"{path}: unknown model format {path.suffix or '(no suffix)'!r}; expected one of "
            f"{', '.join(sorted(SUFFIXES))}"
        )
    return get_backend(name).read_metadata(path)


def available_backends() -> list[str]:
    """Names of the backends whose runtime library imports here."""
    return [name for name in BACKENDS if get_backend(name).available()]


__all__ = [
    "BACKENDS",
    "SUFFIXES",
    "Backend",
    "BackendError",
    "available_backends",
    "default_threads",
    "get_backend",
    "read_metadata",
]
