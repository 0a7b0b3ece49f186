"""Evaluation: one path (a runtime ``Detector``) and one COCO evaluator for checkpoints and
exported bundles alike."""

from .coco import EvalResult, evaluate
from .val import EVAL, EvalSettings, ValidationError, evaluate_detector, evaluate_model, validate

__all__ = [
    "EVAL",
    "EvalResult",
    "EvalSettings",
    "ValidationError",
    "evaluate",
    "evaluate_detector",
    "evaluate_model",
    "validate",
]
