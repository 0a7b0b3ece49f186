"""Models: GELAN-t/s (inference) and YOLOv9-t/s (GELAN + PGI auxiliary branch, training)."""

from .checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from .decode import decode_outputs, flatten_outputs, make_anchors
from .export_form import OUTPUT_NAMES, ExportModel
from .fuse import fuse_model, is_fused
from .gelan import YOLO, GELANConfig, create_model, list_models, model_from_config, register_model
from .profile import count_flops, count_params, model_summary

__all__ = [
    "OUTPUT_NAMES",
    "YOLO",
    "CheckpointError",
    "ExportModel",
    "GELANConfig",
    "count_flops",
    "count_params",
    "create_model",
    "decode_outputs",
    "flatten_outputs",
    "fuse_model",
    "is_fused",
    "list_models",
    "load_checkpoint",
    "load_model",
    "make_anchors",
    "model_from_config",
    "model_summary",
    "register_model",
    "save_checkpoint",
]
