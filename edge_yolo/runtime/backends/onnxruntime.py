"""onnxruntime backend: plain ONNX bundles, and Jetson Q/DQ ONNX files off the Jetson."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ...contract import OUTPUT_NAMES
from ...errors import first_line, option
from ..bundle import META_KEY, BundleError
from ..onnx_file import read_onnx_metadata
from .base import Backend, BackendError

#: ``device`` -> execution providers to try, in order (CPU always last as the fallback).
PROVIDERS = {
    None: ["CPUExecutionProvider"],
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "gpu": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}
#: batch chunk for files whose batch dimension is dynamic
DYNAMIC_MAX_BATCH = 32


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    requires = ("onnxruntime",)

    def load(self) -> None:
        import onnxruntime as ort

        device = self.device
        if device not in PROVIDERS:
            raise BackendError(
                f"{self.model_path}: onnxruntime device must be one of "
                f"{', '.join(str(k) for k in PROVIDERS if k)}, got {device!r}"
            )
        available = ort.get_available_providers()
        if device in ("cuda", "gpu") and "CUDAExecutionProvider" not in available:
            raise BackendError(
                f"{self.model_path}: {option('device', device)}: this onnxruntime has no CUDA "
                f"provider "
                f"(available: {', '.join(available)}); install onnxruntime-gpu, or use cpu"
            )
        providers = [p for p in PROVIDERS[device] if p in available]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1  # one model, sequential graph: no inter-op parallelism
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if not self.model_path.is_file():
            raise BackendError(f"{self.model_path}: no such ONNX model file")
        try:
            self.session = ort.InferenceSession(str(self.model_path), opts, providers=providers)
        except Exception as e:  # onnxruntime raises Fail / InvalidProtobuf / InvalidGraph
            raise BackendError(
                f"{self.model_path}: onnxruntime cannot load this model, truncated or corrupt? "
                f"({first_line(e)})"
            ) from e
        (inp,) = self.session.get_inputs()
        self.input_name = inp.name
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self._batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        outputs = {o.name: tuple(o.shape) for o in self.session.get_outputs()}
        self.check_io(tuple(inp.shape), outputs)

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("onnxruntime") is not None

    @classmethod
    def embedded_metadata(cls, model_path: Path) -> str | None:
        """``metadata_props`` read straight from the file (no session is built for it)."""
        try:
            return read_onnx_metadata(model_path).get(META_KEY)
        except (OSError, ValueError) as e:
            raise BundleError(
                f"{model_path}: not a loadable ONNX model, truncated or corrupt? ({e})"
            ) from e

    @property
    def max_batch(self) -> int:
        return self._batch or DYNAMIC_MAX_BATCH

    def infer(self, blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        blob = np.ascontiguousarray(blob, dtype=self.input_dtype)
        split = self.split_batch(blob, self._batch)
        if split is not None:
            return split
        try:
            box, cls = self.session.run(list(OUTPUT_NAMES), {self.input_name: blob})
        except Exception as e:
            raise BackendError(
                f"{self.model_path}: onnxruntime inference failed ({first_line(e)})"
            ) from e
        return box.astype(np.float32, copy=False), cls.astype(np.float32, copy=False)
