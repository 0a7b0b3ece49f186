"""Evaluation: COCO-protocol mAP of the PyTorch model and of exported artifacts, one evaluator."""

from .coco import EvalResult, evaluate, evaluate_detector, evaluate_model

__all__ = ["EvalResult", "evaluate", "evaluate_detector", "evaluate_model"]
