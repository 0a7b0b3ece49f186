"""TFLite backend: ai-edge-litert, falling back to tflite-runtime (what many Pi OS images carry).

Both interpreters apply the XNNPACK delegate by default; ``threads`` (default: all cores) goes
to it. Outputs are looked up by their signature names (``box_dist``, ``cls_logits``): TFLite
may reorder and rename output tensors, and a 64-class model has two outputs of the same
shape. Integer inputs are quantized and integer outputs dequantized with the parameters the
file itself declares, after checking them against the metadata.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ...contract import OUTPUT_NAMES
from ...errors import first_line
from ..bundle import META_KEY, BundleError
from ..processing import dequantize, quantize
from ..tflite_file import read_metadata
from .base import Backend, BackendError, Done

SIGNATURE = "serving_default"


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    return Interpreter


def delegate_coverage(interpreter: Any) -> tuple[int, list[dict[str, Any]]]:
    """How a loaded interpreter runs its graph: (delegate partitions, operators outside them).

    After ``allocate_tensors`` the delegate's partitions appear as ``DELEGATE`` operators
    beside the original ones. The operators outside are found from the tensors: whatever a
    partition (or the output) needs that no partition, input or constant provides was made
    by an operator TFLite runs itself, and so, transitively, were that operator's inputs.
    Each partition boundary is a hand-over between XNNPACK's threads and TFLite's own,
    mostly single-threaded, kernels.
    """
    ops = interpreter._get_ops_details()
    partitions = [op for op in ops if op["op_name"] == "DELEGATE"]
    own = {op["index"]: op for op in ops if op["op_name"] != "DELEGATE"}
    producer = {t: i for i, op in own.items() for t in op["outputs"]}
    available = {d["index"] for d in interpreter.get_input_details()}
    available |= {t for op in own.values() for t in op["inputs"] if t >= 0 and t not in producer}
    for op in partitions:
        available |= set(op["outputs"])
    needed = {t for op in partitions for t in op["inputs"] if t >= 0}
    needed |= {d["index"] for d in interpreter.get_output_details()}
    needed -= available
    outside: set[int] = set()
    while needed:
        made_by = producer.get(needed.pop())
        if made_by is None or made_by in outside:
            continue
        outside.add(made_by)
        needed |= {t for t in own[made_by]["inputs"] if t >= 0 and t not in available}
    return len(partitions), [own[i] for i in sorted(outside)]


class TFLiteBackend(Backend):
    name = "tflite"
    requires = ("ai-edge-litert", "tflite-runtime")

    def load(self) -> None:
        path = self.model_path
        device = self.device
        if device not in (None, "cpu"):
            raise BackendError(
                f"{path}: the tflite backend runs on the CPU (XNNPACK), not {device!r}"
            )
        try:
            data = path.read_bytes()
        except OSError as e:
            raise BackendError(f"{path}: cannot read the TFLite model ({e.strerror})") from e
        try:
            # tflite-runtime does not verify the flatbuffer and crashes on a cut-off file.
            read_metadata(data, META_KEY)
        except ValueError as e:
            raise BackendError(
                f"{path}: not a valid TFLite model, truncated or corrupt? ({e})"
            ) from e
        try:
            interpreter_cls = _interpreter_class()
        except ImportError as e:
            raise BackendError(f"{path}: {self.missing_message()}") from e
        try:
            self.interpreter = interpreter_cls(model_path=str(path), num_threads=self.threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise BackendError(
                f"{path}: not a loadable TFLite model, truncated or corrupt? ({first_line(e)})"
            ) from e
        self.runtime = interpreter_cls.__module__.split(".")[0]
        self._interpreter_cls = interpreter_cls
        self._lanes: list[tuple[Any, Any]] | None = None  # (executor, interpreter), on demand
        self._next_lane = 0
        self._input, self._outputs = self._bind()
        self.check_io(
            tuple(self._input["shape"]), {k: tuple(d["shape"]) for k, d in self._outputs.items()}
        )
        self._check_quantization()
        self.takes_uint8 = self._pixels_are_the_input()

    def _pixels_are_the_input(self) -> bool:
        """True when the integer input is the pixels themselves: NHWC, [0, 1] quantized with
        scale 1/255 (int8: zero point -128, uint8: 0). The Detector's uint8 images then go in
        as ``pixel - 128`` (or as they are): no float blob and no quantizing (at 640 px that
        was most of the pre-processing of an INT8 bundle)."""
        dtype = np.dtype(self._input["dtype"])
        scale, zero_point = self._input["quantization"]
        norm = self.meta.normalization
        return (self.meta.layout == "NHWC" and not any(norm.get("mean", (0, 0, 0)))
                and abs(float(norm.get("scale", 1 / 255)) * 255 - 1) < 1e-6
                and abs(scale * 255 - 1) < 1e-6
                and (dtype, zero_point) in ((np.dtype(np.int8), -128), (np.dtype(np.uint8), 0)))

    @classmethod
    def embedded_metadata(cls, model_path: Path) -> str | None:
        """The model-metadata entry, read without any TFLite package (tflite-runtime ships no
        schema), after checking that every tensor buffer lies inside the file."""
        try:
            raw = read_metadata(Path(model_path).read_bytes(), META_KEY)
            return None if raw is None else raw.decode("utf-8")
        except OSError as e:
            raise BundleError(f"{model_path}: cannot read the TFLite model ({e.strerror})") from e
        except (ValueError, UnicodeDecodeError) as e:
            raise BundleError(
                f"{model_path}: not a valid TFLite model, truncated or corrupt? ({e})"
            ) from e

    @classmethod
    def available(cls) -> bool:
        return any(
            importlib.util.find_spec(m) is not None for m in ("ai_edge_litert", "tflite_runtime")
        )

    # -- binding ------------------------------------------------------------------------------

    def _bind(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Input details and output details by name: from the signature when the file has one
        (ours always do), else by tensor name, else by shape when that is unambiguous."""
        interp = self.interpreter
        signatures = interp.get_signature_list()
        if SIGNATURE in signatures and set(OUTPUT_NAMES) <= set(signatures[SIGNATURE]["outputs"]):
            runner = interp.get_signature_runner(SIGNATURE)
            ins, outs = runner.get_input_details(), runner.get_output_details()
            if len(ins) != 1:
                raise BackendError(
                    f"{self.model_path}: expected one input, the signature has {sorted(ins)}"
                )
            main = {d["index"] for d in interp.get_input_details()}
            (inp,) = ins.values()
            if inp["index"] not in main:  # signature on another subgraph: not what we export
                raise BackendError(
                    f"{self.model_path}: signature {SIGNATURE!r} is not the main graph"
                )
            return inp, {n: outs[n] for n in OUTPUT_NAMES}
        inputs, outputs = interp.get_input_details(), interp.get_output_details()
        if len(inputs) != 1 or len(outputs) != 2:
            raise BackendError(
                f"{self.model_path}: expected 1 input and 2 outputs (box_dist, cls_logits), the "
                f"model has {len(inputs)} and {len(outputs)}"
            )
        named = {n: d for n in OUTPUT_NAMES for d in outputs if n in d["name"]}
        if len(named) == 2 and named["box_dist"] is not named["cls_logits"]:
            return inputs[0], named
        box_channels = 4 * self.meta.reg_max
        if self.meta.num_classes == box_channels:
            raise BackendError(
                f"{self.model_path}: outputs carry no names and both have {box_channels} channels; "
                "re-export with edge-yolo so the signature names them"
            )
        by_shape = {}
        for d in outputs:
            by_shape["box_dist" if box_channels in d["shape"][1:] else "cls_logits"] = d
        if len(by_shape) != 2:
            raise BackendError(
                f"{self.model_path}: cannot tell box_dist from cls_logits by shape "
                f"({[list(d['shape']) for d in outputs]})"
            )
        return inputs[0], by_shape

    def _check_quantization(self) -> None:
        """The metadata's quantization parameters must be the file's (the file wins at run time,
        but a mismatch means the metadata describes another model)."""
        specs = {s.name: s for s in (*self.meta.inputs, *self.meta.outputs)}
        tensors = {
            self.meta.inputs[0].name if self.meta.inputs else "images": self._input,
            **self._outputs,
        }
        for name, d in tensors.items():
            scale, zero_point = d["quantization"]
            spec = specs.get(name)
            integer = np.issubdtype(np.dtype(d["dtype"]), np.integer)
            if integer and not scale:
                raise BackendError(
                    f"{self.model_path}: integer tensor {name!r} has no quantization scale"
                )
            if spec is None or not spec.quantized:
                if integer:
                    raise BackendError(
                        f"{self.model_path}: tensor {name!r} is {np.dtype(d['dtype']).name} but "
                        "the metadata gives no scale/zero point for it"
                    )
                continue
            if (
                not integer
                or not np.isclose(spec.scale, scale, rtol=1e-6)
                or spec.zero_point != zero_point
            ):
                raise BackendError(
                    f"{self.model_path}: metadata quantizes {name!r} with scale {spec.scale}, "
                    f"zero point {spec.zero_point}, the model file with "
                    f"{np.dtype(d['dtype']).name} scale "
                    f"{scale}, zero point {zero_point}"
                )

    # -- inference ----------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return 2 if self.threads >= 2 else 1

    def _lane(self) -> tuple[Any, Any]:
        """The next of two lanes for :meth:`submit`: each an interpreter of the same file with
        half the threads, run by its own worker thread (TFLite releases the GIL in invoke),
        so two frames infer side by side. Measured on 2 cores (gelan-t int8, 320 px): one
        interpreter of 2 threads ran 145 frames/s, two of one thread each 215 together;
        XNNPACK's second thread adds little to a small model."""
        if self._lanes is None:
            from concurrent.futures import ThreadPoolExecutor

            lanes = []
            for i in range(2):
                interp = self._interpreter_cls(
                    model_path=str(self.model_path), num_threads=max(1, self.threads // 2))
                interp.allocate_tensors()
                pool = ThreadPoolExecutor(1, thread_name_prefix=f"edge-yolo-tflite-{i}")
                lanes.append((pool, interp))
            self._lanes = lanes
        lane = self._lanes[self._next_lane]
        self._next_lane = (self._next_lane + 1) % len(self._lanes)
        return lane

    def submit(self, blob: np.ndarray) -> Any:
        """With 2 threads or more, inference starts on the next lane (:meth:`_lane`) and a
        future comes back; a lane's work runs in order, so any number may be in flight."""
        if self.threads < 2:
            return Done(self.infer(blob))
        pool, interp = self._lane()
        return pool.submit(self._run, interp, blob)

    def collect(self, handle: Any) -> tuple[np.ndarray, np.ndarray]:
        return handle.outputs if isinstance(handle, Done) else handle.result()

    def infer(self, blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._run(self.interpreter, blob)

    def _run(self, interp: Any, blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inp = self._input
        want = tuple(int(v) for v in inp["shape"][1:])
        if blob.ndim != 4 or blob.shape[1:] != want:
            raise BackendError(
                f"{self.model_path}: input blob of shape {list(blob.shape)} does not fit the model "
                f"input {list(inp['shape'])} ({self.meta.layout})"
            )
        dtype = np.dtype(inp["dtype"])
        scale, zero_point = inp["quantization"]
        boxes, scores = [], []
        if blob.dtype == np.uint8 and not self.takes_uint8:
            raise BackendError(f"{self.model_path}: this model takes a float blob, not uint8 "
                               "images")
        for x in blob:  # static batch 1: one invoke per image
            if blob.dtype == np.uint8:  # the pixels are the input: pixel - 128 for int8
                if self.meta.color == "RGB":
                    x = cv2.cvtColor(x, cv2.COLOR_BGR2RGB)
                x = (x ^ np.uint8(0x80)).view(np.int8) if dtype == np.int8 else x
            elif np.issubdtype(dtype, np.integer):
                x = quantize(x, scale, zero_point, dtype)
            else:
                x = x.astype(dtype, copy=False)
            x = x[None]
            interp.set_tensor(inp["index"], x)
            interp.invoke()
            box, cls = (self._read(interp, name) for name in OUTPUT_NAMES)
            boxes.append(box)
            scores.append(cls)
        return np.concatenate(boxes), np.concatenate(scores)

    def _read(self, interp: Any, name: str) -> np.ndarray:
        d = self._outputs[name]
        out = interp.get_tensor(d["index"])
        if np.issubdtype(out.dtype, np.integer):
            scale, zero_point = d["quantization"]
            out = dequantize(out, scale, zero_point)
        else:
            out = out.astype(np.float32, copy=False)
        channels = 4 * self.meta.reg_max if name == "box_dist" else self.meta.num_classes
        if out.shape[1] != channels:  # stored anchors-major (B, A, C): bring to (B, C, A)
            out = out.transpose(0, 2, 1)
        return np.ascontiguousarray(out)
