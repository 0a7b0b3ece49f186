"""Quantization: calibration data and post-training quantization (NNCF, onnxruntime).

Host-side only; every library (nncf, openvino, onnxruntime) is imported inside the function
that needs it.
"""

from .calibration import cpu_has_vnni, resolve_overflow_fix
from .ptq import quantize_openvino, quantize_qdq_onnx

__all__ = ["cpu_has_vnni", "quantize_openvino", "quantize_qdq_onnx", "resolve_overflow_fix"]
