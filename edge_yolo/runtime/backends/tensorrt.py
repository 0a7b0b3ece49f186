"""TensorRT backend (Jetson): builds an engine from the bundle's ONNX on first load, caches it.

Engines are not portable across GPUs or TensorRT versions, so the exporter ships ONNX (plain
for fp32/fp16, explicit Q/DQ for int8) and the engine is built here, on the device, then
cached under a key made of the ONNX file's hash, the TensorRT version, the GPU's name and
compute capability, the precision and the batch range. Later loads deserialize the cached
engine (seconds instead of minutes).

Written against the TensorRT 10.x Python API: ``create_network(0)`` (explicit batch is the
only mode), ``BuilderFlag.FP16`` / ``BuilderFlag.INT8`` (INT8 here only enables the explicit
Q/DQ layers already in the graph; no calibrator, implicit quantization is deprecated in 10.x),
``build_serialized_network``, tensors addressed by name with ``set_tensor_address`` and
``execute_async_v3``. CUDA memory and streams come from ``cuda-python`` (``cuda.bindings.runtime``,
or ``cuda.cudart`` in cuda-python < 12.6), which JetPack provides; torch is not needed.

Only the pure parts (cache key, cache path, ONNX checks) run in CI; everything that touches
``tensorrt`` or CUDA is marked DEVICE-ONLY and must be checked on a Jetson.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...fileio import atomic_write_bytes, sha256_file
from ..bundle import META_FILE, BundleError, BundleMeta
from .base import Backend, BackendError

LOGGER = logging.getLogger(__name__)

ENGINE_SUFFIXES = (".engine", ".plan")
#: Batch range of the optimization profile built for ONNX files with a dynamic batch axis.
DYNAMIC_MAX_BATCH = 8
WORKSPACE_BYTES = 1 << 30  # builder scratch memory; Orin Nano has 8 GB shared with the CPU
BUILDER_FLAGS = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8", "FP16")}  # fp16 for float islands


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized engine depends on; a different value means a rebuild."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: str
    max_batch: int = 1

    def digest(self) -> str:
        """Short stable hash of all fields."""
        text = "|".join(
            str(v)
            for v in (
                self.onnx_sha256,
                self.tensorrt_version,
                self.gpu_name,
                self.compute_capability,
                self.precision,
                self.max_batch,
            )
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def file_name(self, stem: str) -> str:
        """``<stem>-trt<version>-<gpu>-sm<cc>-<precision>-<digest>.engine``, filesystem-safe."""
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", self.gpu_name).strip("-").lower() or "gpu"
        major, minor = self.compute_capability
        return (
            f"{stem}-trt{self.tensorrt_version}-{gpu}-sm{major}{minor}-{self.precision}"
            f"-b{self.max_batch}-{self.digest()}.engine"
        )


def default_cache_dir() -> Path:
    """``$EDGE_YOLO_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/edge_yolo/engines`` (``~/.cache``)."""
    env = os.environ.get("EDGE_YOLO_ENGINE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edge_yolo" / "engines"


def engine_cache_path(onnx_path: Path, key: EngineKey, cache_dir: Path | None = None) -> Path:
    """Where the engine for ``onnx_path`` and ``key`` lives: ``engines/`` beside the ONNX file
    when that directory is writable (the bundle carries its engines), else the user cache."""
    name = key.file_name(onnx_path.stem)
    if cache_dir is not None:
        return Path(cache_dir) / name
    beside = onnx_path.parent / "engines"
    if os.access(beside if beside.is_dir() else onnx_path.parent, os.W_OK):
        return beside / name
    return default_cache_dir() / name


def check_onnx_source(model_path: Path) -> None:
    """Refuse a model file TensorRT cannot build from, before touching the GPU."""
    if model_path.suffix.lower() in ENGINE_SUFFIXES:
        if not model_path.is_file():
            raise BackendError(f"{model_path}: no such TensorRT engine file")
        return
    if model_path.suffix.lower() != ".onnx":
        raise BackendError(
            f"{model_path}: the tensorrt backend builds engines from ONNX (a jetson bundle); "
            f"got a {model_path.suffix or 'suffix-less'} file"
        )
    if not model_path.is_file():
        raise BackendError(f"{model_path}: no such ONNX model file (the engine is built from it)")
    with open(model_path, "rb") as f:
        head = f.read(64)
    # Every ONNX file is a protobuf ModelProto whose first field is ir_version (tag 0x08).
    if not head or head[0] != 0x08:
        raise BackendError(f"{model_path}: not an ONNX model (a protobuf ModelProto was expected)")


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python (JetPack 5/6 wheels)
    return cudart


def _check(result: Any) -> Any:
    """Unpack a cuda-python ``(err, *values)`` tuple, raising on a CUDA error.  DEVICE-ONLY."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(getattr(err, "value", err)) != 0:  # cudaError_t.cudaSuccess == 0
        raise BackendError(f"CUDA error {err!r}")
    return values[0] if len(values) == 1 else values


class TensorRTBackend(Backend):
    name = "tensorrt"
    requires = ("tensorrt", "cuda-python")

    def load(self, *, cache_dir: str | os.PathLike | None = None) -> None:
        # ``threads``: TensorRT runs the network on the GPU and has no CPU thread pool.
        check_onnx_source(self.model_path)
        meta = self.meta
        if meta.precision not in BUILDER_FLAGS:
            raise BundleError(
                f"{self.model_path}: unknown precision {meta.precision!r} for TensorRT"
            )
        # --- DEVICE-ONLY from here: needs tensorrt, cuda-python and an NVIDIA GPU.
        import tensorrt as trt

        self._trt = trt
        self._cudart = _cudart()
        self.gpu_index = _gpu_index(self.device)
        _check(self._cudart.cudaSetDevice(self.gpu_index))
        self._logger = trt.Logger(trt.Logger.WARNING)
        if self.model_path.suffix.lower() in ENGINE_SUFFIXES:
            self.engine_path = self.model_path
        else:
            self.engine_path = self._cached_engine(cache_dir)
        self._load_engine(self.engine_path)

    @classmethod
    def available(cls) -> bool:
        if importlib.util.find_spec("tensorrt") is None:
            return False
        try:
            return importlib.util.find_spec("cuda") is not None
        except (ImportError, ValueError):
            return False

    @classmethod
    def missing_message(cls) -> str:
        missing = [
            pkg
            for pkg, module in (("tensorrt", "tensorrt"), ("cuda-python", "cuda"))
            if importlib.util.find_spec(module) is None
        ]
        names = " and ".join(repr(m) for m in missing) or "'tensorrt'"
        return (
            f"the tensorrt backend needs the {names} package{'s' if len(missing) > 1 else ''}, "
            "which JetPack provides on a Jetson (TensorRT engines run on NVIDIA GPUs only)"
        )

    @classmethod
    def read_metadata(cls, model_path: Path) -> BundleMeta:
        """Engines carry no edge-yolo metadata: use the bundle's ``edge_yolo.json`` (the engine
        sits in the bundle or its ``engines/`` folder)."""
        model_path = Path(model_path)
        if model_path.suffix.lower() in ENGINE_SUFFIXES:
            for folder in (model_path.parent, model_path.parent.parent):
                if (folder / META_FILE).is_file():
                    return BundleMeta.read(folder)
            raise BundleError(
                f"{model_path}: a TensorRT engine carries no edge-yolo metadata and no "
                f"{META_FILE} was found beside it; load the bundle directory instead"
            )
        return super().read_metadata(model_path)

    @classmethod
    def embedded_metadata(cls, model_path: Path) -> str | None:
        """A Jetson bundle's ONNX carries the metadata like any ONNX file."""
        from .onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend.embedded_metadata(model_path)

    # ------------------------------------------------------------------ DEVICE-ONLY

    def _gpu_properties(self) -> tuple[str, tuple[int, int]]:
        props = _check(self._cudart.cudaGetDeviceProperties(self.gpu_index))
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return name.rstrip("\x00"), (int(props.major), int(props.minor))

    def _onnx_max_batch(self) -> int:
        inputs = self.meta.inputs
        batch = inputs[0].shape[0] if inputs and inputs[0].shape else 1
        return DYNAMIC_MAX_BATCH if batch is None or int(batch) <= 0 else int(batch)

    def _cached_engine(self, cache_dir: str | os.PathLike | None) -> Path:
        gpu_name, cc = self._gpu_properties()
        key = EngineKey(
            onnx_sha256=sha256_file(self.model_path),
            tensorrt_version=self._trt.__version__,
            gpu_name=gpu_name,
            compute_capability=cc,
            precision=self.meta.precision,
            max_batch=self._onnx_max_batch(),
        )
        path = engine_cache_path(self.model_path, key, Path(cache_dir) if cache_dir else None)
        if path.is_file():
            return path
        LOGGER.warning(
            "building a TensorRT %s engine for %s (minutes on a Jetson; cached at %s)",
            self.meta.precision,
            self.model_path,
            path,
        )
        atomic_write_bytes(path, self._build_engine(key.max_batch))
        return path

    def _build_engine(self, max_batch: int) -> bytes:
        trt = self._trt
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch always
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse_from_file(str(self.model_path)):
            errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
            raise BackendError(
                f"{self.model_path}: TensorRT cannot parse this ONNX model ({errors})"
            )
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        for flag in BUILDER_FLAGS[self.meta.precision]:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        inp = network.get_input(0)
        if inp.shape[0] == -1:  # dynamic batch: one optimization profile 1..max_batch
            chw = tuple(inp.shape)[1:]
            profile = builder.create_optimization_profile()
            profile.set_shape(inp.name, (1, *chw), (max_batch, *chw), (max_batch, *chw))
            config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BackendError(
                f"{self.model_path}: TensorRT failed to build an engine (see its log)"
            )
        return bytes(plan)

    def _load_engine(self, path: Path) -> None:
        trt = self._trt
        runtime = trt.Runtime(self._logger)
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise BackendError(
                f"{path}: TensorRT cannot load this engine (built by another TensorRT version or "
                "GPU, or truncated); delete it and it will be rebuilt from the ONNX file"
            )
        self._runtime, self.engine = runtime, engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise BackendError(f"{path}: expected one input tensor, the engine has {inputs}")
        self.input_name = inputs[0]
        self.output_names = [n for n in names if n not in inputs]
        shape = tuple(engine.get_tensor_shape(self.input_name))
        self._dynamic = shape[0] == -1
        self._max_batch = (
            int(engine.get_tensor_profile_shape(self.input_name, 0)[2][0])
            if self._dynamic
            else int(shape[0])
        )
        self.check_io(shape, {n: tuple(engine.get_tensor_shape(n)) for n in self.output_names})
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._stream = _check(self._cudart.cudaStreamCreate())
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _device_buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self._cudart.cudaFree(ptr))
            ptr = _check(self._cudart.cudaMalloc(nbytes))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def infer(self, blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cudart = self._cudart
        if blob.shape[0] > self._max_batch:
            raise BackendError(
                f"{self.engine_path}: batch {blob.shape[0]} > engine max {self._max_batch}"
            )
        if not self._dynamic and blob.shape[0] != self._max_batch:
            parts = [self.infer(blob[i : i + 1]) for i in range(blob.shape[0])]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        x = np.ascontiguousarray(blob, dtype=self._dtypes[self.input_name])
        if self._dynamic:
            self.context.set_input_shape(self.input_name, x.shape)
        h2d, d2h = (
            cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
            cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
        )
        ptr = self._device_buffer(self.input_name, x.nbytes)
        self.context.set_tensor_address(self.input_name, ptr)
        _check(cudart.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes, h2d, self._stream))
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            host = np.empty(shape, self._dtypes[name])
            outputs[name] = host
            self.context.set_tensor_address(name, self._device_buffer(name, host.nbytes))
        if not self.context.execute_async_v3(self._stream):
            raise BackendError(f"{self.engine_path}: TensorRT inference failed")
        for name, host in outputs.items():
            ptr = self._buffers[name][0]
            _check(cudart.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, d2h, self._stream))
        _check(cudart.cudaStreamSynchronize(self._stream))
        return _canonical(outputs["box_dist"], 4 * self.meta.reg_max), _canonical(
            outputs["cls_logits"], self.meta.num_classes
        )

    def __del__(self) -> None:
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        for ptr, _ in getattr(self, "_buffers", {}).values():
            cudart.cudaFree(ptr)
        if getattr(self, "_stream", None) is not None:
            cudart.cudaStreamDestroy(self._stream)


def _gpu_index(device: str | None) -> int:
    """``None``/``"cuda"``/``"gpu"`` -> 0; ``"cuda:1"`` -> 1."""
    if device is None or device.lower() in ("cuda", "gpu"):
        return 0
    m = re.fullmatch(r"(?:cuda|gpu):(\d+)", device.lower())
    if not m:
        raise BackendError(f"tensorrt device must be cuda or cuda:N, got {device!r}")
    return int(m.group(1))


def _canonical(x: np.ndarray, channels: int) -> np.ndarray:
    """``(B, C, A)`` float32 whatever layout/dtype the engine produced (``(B, A, C)`` too)."""
    x = x.astype(np.float32, copy=False)
    if x.shape[1] != channels and x.shape[2] == channels:
        x = x.transpose(0, 2, 1)
    return np.ascontiguousarray(x)
