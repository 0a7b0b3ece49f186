"""Runtime backends: a plain dict from name to ``module:Class``, imported on first use."""

from __future__ import annotations

import importlib

from .base import Backend, BackendError, default_threads

BACKENDS: dict[str, str] = {
    "onnxruntime": "edge_yolo.runtime.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "edge_yolo.runtime.backends.openvino:OpenVINOBackend",
    "tflite": "edge_yolo.runtime.backends.tflite:TFLiteBackend",
    "tensorrt": "edge_yolo.runtime.backends.tensorrt:TensorRTBackend",
    "torch": "edge_yolo.runtime.backends.torch:TorchBackend",
}

# Model-file suffix -> the backend that runs a lone file of that format.
SUFFIXES: dict[str, str] = {
    ".onnx": "onnxruntime",
    ".xml": "openvino",
    ".tflite": "tflite",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
    ".pt": "torch",
}


def get_backend(name: str) -> type[Backend]:
    """The backend class registered under ``name`` (its module imported now)."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def available_backends() -> list[str]:
    """Names of the backends whose runtime library imports here."""
    return [name for name in BACKENDS if get_backend(name).available()]


__all__ = [
    "BACKENDS",
    "SUFFIXES",
    "Backend",
    "BackendError",
    "available_backends",
    "default_threads",
    "get_backend",
]
