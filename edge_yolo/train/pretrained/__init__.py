"""Start training from published YOLOv9-T/S weights (``edge-yolo train --weights FILE``).

Reads WongKinYiu/yolov9 checkpoints without executing pickled code, MultimediaTechLab/YOLO
state_dicts and edge-yolo checkpoints, maps them by layer index onto edge-yolo's named modules
(:mod:`.layouts`), sizes the heads to the checkpoint and re-initialises the class outputs when
the class count changes.
"""

from .loader import (
    EDGE_YOLO,
    MIT,
    REFERENCE,
    LoadSummary,
    PretrainedWeights,
    apply_pretrained,
    create_model_for_weights,
    fit_heads,
    load_pretrained,
    read_pretrained,
)
from .safe_unpickle import PretrainedError

__all__ = [
    "EDGE_YOLO",
    "MIT",
    "REFERENCE",
    "LoadSummary",
    "PretrainedError",
    "PretrainedWeights",
    "apply_pretrained",
    "create_model_for_weights",
    "fit_heads",
    "load_pretrained",
    "read_pretrained",
]
