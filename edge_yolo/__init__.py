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
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_yolo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
