"""Datasets (YOLO txt, COCO JSON, Pascal VOC XML, built-in synthetic), augmentation and loaders.

``load_dataset(spec, split)`` opens any supported format as a :class:`DetectionDataset`;
``load_images(source, n)`` reads calibration images; ``DetectionLoader(...)`` (needs torch,
imported on first use) yields training and validation batches.
"""

from __future__ import annotations

import importlib
from typing import Any

from .augment import AugmentConfig, Augmenter
from .dataset import (
    DetectionDataset,
    FirstN,
    ImageFileDataset,
    ImageReadError,
    Sample,
    read_image,
)
from .formats import load_coco, load_dataset, load_images, load_voc, load_yolo, spec_kwargs
from .report import DataReport, DatasetError
from .synthetic import CLASSES as SYNTHETIC_CLASSES
from .synthetic import SyntheticConfig, SyntheticDataset

# Names whose module imports torch: resolved on first use so `import edge_yolo.data` stays light.
_LAZY = {"DetectionLoader": ".loader", "BatchMeta": ".loader"}

__all__ = [
    "SYNTHETIC_CLASSES",
    "AugmentConfig",
    "Augmenter",
    "DataReport",
    "DatasetError",
    "DetectionDataset",
    "FirstN",
    "ImageFileDataset",
    "ImageReadError",
    "Sample",
    "SyntheticConfig",
    "SyntheticDataset",
    "load_coco",
    "load_dataset",
    "load_images",
    "load_voc",
    "load_yolo",
    "read_image",
    "spec_kwargs",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_yolo.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
