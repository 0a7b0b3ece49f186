"""The facts every part of edge-yolo agrees on, written once (standard library only).

The exported network's interface (input and output names, strides, DFL bins, anchor count),
the naming rule between training and inference variants, and the table of runtime backends
with the model-file suffixes each runs. Exporters, the runtime, evaluation and the tests all
import these; none restates them. See ``docs/CONTRACTS.md`` for the layouts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: name of the exported graph's single input (letterboxed RGB in [0, 1])
INPUT_NAME = "images"
#: the exported graph's two outputs, in this order: DFL box logits, class logits
OUTPUT_NAMES = ("box_dist", "cls_logits")
#: detection strides of the P3, P4, P5 levels
STRIDES = (8, 16, 32)
#: DFL bins per box side
REG_MAX = 16


def num_anchors(height: int, width: int, strides: Sequence[int] = STRIDES) -> int:
    """Anchor points of an input of ``height x width``: one per cell of every level."""
    return sum((-(-int(height) // s)) * (-(-int(width) // s)) for s in strides)


def inference_name(model_name: str) -> str:
    """The inference network of a model name: ``yolov9-t`` trains GELAN-t with the PGI branch,
    which is dropped for inference, so a yolov9-t checkpoint deploys as ``gelan-t``."""
    return model_name.lower().replace("yolov9-", "gelan-")


@dataclass(frozen=True)
class BackendInfo:
    """One runtime backend: where its class lives and which lone model files it runs."""

    name: str
    target: str  # "module:Class", imported on first use
    suffixes: tuple[str, ...]


#: The runtime backends. A lone model file runs on the backend listing its suffix; a bundle
#: names its backend in ``edge_yolo.json``.
BACKENDS: dict[str, BackendInfo] = {
    b.name: b
    for b in (
        BackendInfo("onnxruntime", "edge_yolo.runtime.backends.onnxruntime:OnnxRuntimeBackend",
                    (".onnx",)),
        BackendInfo("openvino", "edge_yolo.runtime.backends.openvino:OpenVINOBackend", (".xml",)),
        BackendInfo("tflite", "edge_yolo.runtime.backends.tflite:TFLiteBackend", (".tflite",)),
        BackendInfo("tensorrt", "edge_yolo.runtime.backends.tensorrt:TensorRTBackend",
                    (".engine", ".plan")),
        BackendInfo("torch", "edge_yolo.runtime.backends.torch:TorchBackend", (".pt",)),
    )
}

#: model-file suffix -> the backend that runs a lone file of that format
SUFFIXES: dict[str, str] = {s: b.name for b in BACKENDS.values() for s in b.suffixes}
