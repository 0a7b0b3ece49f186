"""edge-yolo: YOLOv9 (GELAN + PGI) from the training host to small devices.

Importing this package never imports torch, NNCF or an exporter library: a Raspberry Pi
installs ``edge-yolo[tflite]`` and runs ``from edge_yolo import Detector``. Host-side
names (``create_model``, ...) are resolved lazily on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it; modules that need torch are imported only when asked for.
_LAZY = {
    "Detector": "edge_yolo.runtime.detector",
    "Detections": "edge_yolo.runtime.detector",
    "create_model": "edge_yolo.models",
    "list_models": "edge_yolo.models",
    # the CLI's main jobs as functions (edge_yolo.api): host side, torch imported on call
    "val": "edge_yolo.api",
}
#: packages that are also the function of their job: ``edge_yolo.train(...)``
_CALLABLE_PACKAGES = ("train", "export")

__all__ = ["__version__", *_LAZY, *_CALLABLE_PACKAGES]


def __getattr__(name: str) -> Any:
    if name in _CALLABLE_PACKAGES:
        return importlib.import_module(f"edge_yolo.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_yolo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
