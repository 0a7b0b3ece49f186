"""Quantization: how each target's model is quantized, from one calibration set.

Host-side only; every library (nncf, openvino, onnxruntime, ai-edge-quantizer) is imported
inside the function that needs it. :mod:`edge_yolo.export` only packages what this produces.
"""

from .calibration import CalibrationError, CalibrationSet
from .ptq import (
    quantize_openvino,
    quantize_qdq_onnx,
    quantize_tflite_fp16_weights,
    quantize_tflite_full_integer,
    resolve_overflow_fix,
)

__all__ = [
    "CalibrationError",
    "CalibrationSet",
    "quantize_openvino",
    "quantize_qdq_onnx",
    "quantize_tflite_fp16_weights",
    "quantize_tflite_full_integer",
    "resolve_overflow_fix",
]
