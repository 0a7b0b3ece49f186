"""On-device inference: ``Detector`` and the numpy pre/post-processing every backend shares.

Device-safe: importing this package pulls numpy and OpenCV only; each backend imports its
runtime library (onnxruntime, openvino, ai-edge-litert, tensorrt, torch) when first used.
"""

from .backends import BackendError, available_backends
from .bundle import BundleError, BundleMeta
from .detector import Detection, Detections, Detector, draw_detections
from .processing import ImageError

__all__ = [
    "BackendError",
    "BundleError",
    "BundleMeta",
    "Detection",
    "Detections",
    "Detector",
    "ImageError",
    "available_backends",
    "draw_detections",
]
