"""OpenVINO backend: IR bundles (``.xml`` + ``.bin``), FP32 / FP16-weights / INT8."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ...contract import OUTPUT_NAMES
from ...errors import first_line
from ..bundle import META_KEY, BundleError
from ..cpu import int8_saturation_risk
from .base import Backend, BackendError, Done


class OpenVINOBackend(Backend):
    """Compiled with OpenVINO's pre-processing in front (``PrePostProcessor``): it takes the
    letterboxed uint8 BGR images and converts, reorders, normalizes and lays them out inside
    the graph, on the plugin's threads. Measured (gelan-t INT8, 640 px, 2 threads): pre 1.9 ->
    0.45 ms, and inference 25 -> 21 ms, as the first convolution reads uint8 directly. A float
    blob (verify's references) runs on the plain model, compiled when first asked for."""

    name = "openvino"
    requires = ("openvino",)
    takes_uint8 = True

    def load(self) -> None:
        import openvino as ov

        path = self.model_path
        if not path.is_file():
            raise BackendError(f"{path}: no such OpenVINO model file")
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as e:  # OpenVINO raises RuntimeError with a long C++ trace
            raise BackendError(
                f"{path}: OpenVINO cannot read this IR (.xml + .bin), truncated or corrupt? "
                f"({first_line(e)})"
            ) from e
        inp = model.inputs[0]
        batch = inp.get_partial_shape()[0]
        self._batch = batch.get_length() if batch.is_static else None
        self.check_io(
            _shape(inp.get_partial_shape()),
            {next(iter(o.get_names()), ""): _shape(o.get_partial_shape()) for o in model.outputs},
        )
        config = {
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,  # one request at a time: all threads on it
            # The CPU plugin computes float layers in bf16 by default on CPUs with AVX512-BF16
            # or AMX, which moves FP32 outputs by whole logits; an fp32/fp16 bundle promises
            # float32 arithmetic (and int8 bundles keep their float layers in f32 too). A bf16
            # bundle asks for bf16, which the plugin honours where the CPU has it.
            "INFERENCE_PRECISION_HINT": "bf16" if self.meta.precision == "bf16" else "f32",
        }
        target = (self.device or "CPU").upper()
        self._core, self._model, self._config, self._target = core, model, config, target
        self._float: tuple | None = None  # (request, outputs) of the plain model, on demand
        self.compiled = self._compile(self._with_preprocessing(model.clone()))  # PPP edits in place
        self.request = self.compiled.create_infer_request()
        #: what the plugin really computes the float layers in ("bf16" or "f32")
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.compute_precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(
            hint)
        self._outputs = [self.compiled.output(n) for n in OUTPUT_NAMES]
        self._idle: list[object] = []  # finished asynchronous requests, for reuse (submit)
        self._streams: tuple | None = None  # (compiled, outputs) for submit, on demand
        self.caveat = int8_saturation_risk(self.meta)

    def _compile(self, model: object, config: dict | None = None) -> object:
        try:
            return self._core.compile_model(model, self._target, config or self._config)
        except Exception as e:
            raise BackendError(
                f"{self.model_path}: OpenVINO cannot compile the model for {self._target} "
                f"({first_line(e)})"
            ) from e

    def _with_preprocessing(self, model: object) -> object:
        """``model`` behind a uint8 BGR NHWC input that becomes the float input the bundle
        describes: ``(pixel - mean) * scale`` in its colour order and layout."""
        import openvino as ov
        from openvino.preprocess import ColorFormat, PrePostProcessor

        meta, norm = self.meta, self.meta.normalization
        ppp = PrePostProcessor(model)
        inp = ppp.input(0)
        inp.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(
            ColorFormat.BGR)
        inp.model().set_layout(ov.Layout(meta.layout))
        steps = inp.preprocess().convert_element_type(ov.Type.f32)
        if meta.color == "RGB":
            steps.convert_color(ColorFormat.RGB)
        mean = [float(v) for v in norm.get("mean", (0.0, 0.0, 0.0))]
        if any(mean):
            steps.mean(mean)
        steps.scale(1.0 / float(norm.get("scale", 1 / 255.0)))
        return ppp.build()

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("openvino") is not None

    @classmethod
    def embedded_metadata(cls, model_path: Path) -> str | None:
        """The IR's ``rt_info`` entry."""
        import json

        import openvino as ov

        try:
            model = ov.Core().read_model(str(model_path))
        except Exception as e:
            raise BundleError(
                f"{model_path}: not a loadable OpenVINO IR (.xml + .bin), truncated or corrupt? "
                f"({first_line(e)})"
            ) from e
        if not model.has_rt_info([META_KEY]):
            return None
        value = model.get_rt_info([META_KEY])
        value = value.astype(str) if hasattr(value, "astype") else value
        return value if isinstance(value, str) else json.dumps(value)

    @property
    def max_batch(self) -> int:
        return self._batch or 32

    @property
    def in_flight(self) -> int:
        return 2  # two requests computing together (threads >= 2), or one while one is filled

    def _streamed(self) -> tuple:
        """The model :meth:`submit` runs: with 2 threads or more, compiled for two streams
        that each take half the threads, so two frames infer side by side; with one thread,
        the single-stream model (one frame computes while the next is prepared).

        Measured on 2 cores (gelan-t int8, 320 px, a camera faster than the model): one
        stream of 2 threads with 2 requests queued gave 1.04x the synchronous loop's frames/s
        at 1.8x its latency, as the second request only waits; two streams of one thread
        gave 1.43x at 1.3x its latency. Outputs are bit-identical to the single-stream
        model's (f32, bf16 and int8 checked): the same kernels, on fewer threads each."""
        if self._streams is None:
            compiled = self.compiled
            if self.threads >= 2:
                config = {**self._config, "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2}
                compiled = self._compile(self._with_preprocessing(self._model.clone()), config)
            self._streams = (compiled, [compiled.output(n) for n in OUTPUT_NAMES])
        return self._streams

    def submit(self, blob: np.ndarray) -> object:
        """An asynchronous infer request on letterboxed uint8 images (``start_async``); a
        float blob or an odd batch runs at once through :meth:`infer`."""
        if blob.dtype != np.uint8 or (self._batch is not None and blob.shape[0] != self._batch):
            return Done(self.infer(blob))
        compiled, _ = self._streamed()
        request = self._idle.pop() if self._idle else compiled.create_infer_request()
        try:
            request.start_async({0: blob})  # the input is copied: the caller may reuse blob
        except Exception as e:
            raise BackendError(
                f"{self.model_path}: OpenVINO inference failed ({first_line(e)})"
            ) from e
        return request

    def collect(self, handle: object) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(handle, Done):
            return handle.outputs
        _, outputs = self._streamed()
        try:
            handle.wait()  # type: ignore[attr-defined]
            results = handle.results  # type: ignore[attr-defined]
            box, cls = (np.array(results[o], dtype=np.float32, copy=True) for o in outputs)
        except Exception as e:
            raise BackendError(
                f"{self.model_path}: OpenVINO inference failed ({first_line(e)})"
            ) from e
        self._idle.append(handle)
        return box, cls

    def infer(self, blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if blob.dtype == np.uint8:  # letterboxed images: normalized inside the graph
            request, outputs = self.request, self._outputs
        else:
            blob = np.ascontiguousarray(blob, dtype=np.float32)
            if self._float is None:
                compiled = self._compile(self._model)
                self._float = (compiled.create_infer_request(),
                               [compiled.output(n) for n in OUTPUT_NAMES])
            request, outputs = self._float
        split = self.split_batch(blob, self._batch)
        if split is not None:
            return split
        try:
            result = request.infer({0: blob})
        except Exception as e:
            raise BackendError(
                f"{self.model_path}: OpenVINO inference failed ({first_line(e)})"
            ) from e
        # the request reuses its output buffers: copy before the next call overwrites them
        box, cls = (np.array(result[o], dtype=np.float32, copy=True) for o in outputs)
        return box, cls



def _shape(partial_shape: object) -> tuple[int, ...]:
    return tuple(d.get_length() if d.is_static else -1 for d in partial_shape)  # type: ignore[attr-defined]
