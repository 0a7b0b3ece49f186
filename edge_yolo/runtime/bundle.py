"""The artifact bundle's metadata (``edge_yolo.json``), shared by exporters and the runtime.

A bundle is a directory ``<name>-<target>-<precision>/`` holding the model file(s) and this
metadata; the same JSON is embedded in the model file where the format allows (ONNX
``metadata_props``, OpenVINO ``rt_info``, TFLite metadata) under the key :data:`META_KEY`, so
a lone model file still loads. This module knows the schema and the JSON only; each runtime
backend reads the copy embedded in its own file format. Parsed into dataclasses, never
evaluated. Standard library only.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract import BACKENDS
from ..errors import refuse_unknown_keys
from ..fileio import atomic_write_text

FORMAT_VERSION = 1
META_FILE = "edge_yolo.json"
META_KEY = "edge_yolo"


class BundleError(ValueError):
    """Metadata that is missing, malformed or contradicts the model; names the file."""


@dataclass
class TensorSpec:
    """One model input or output as the runtime sees it."""

    name: str
    shape: list[int]
    dtype: str = "float32"  # numpy dtype name: float32, float16, int8, uint8
    meaning: str = ""
    scale: float | None = None  # set for integer tensors: real = (q - zero_point) * scale
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        return self.scale is not None


@dataclass
class Calibration:
    dataset: str = ""
    num_images: int = 0
    sha256: str = ""  # hash over the calibration images' decoded pixels, in order
    split: str = ""  # the dataset split the images came from ("" for an image folder)
    requested: int = 0  # how many were asked for (more than num_images when the set was short)


@dataclass
class BundleMeta:
    model: str
    names: list[str]
    imgsz: list[int]  # [height, width] of the network input
    target: str
    precision: str  # fp32 | fp16 | int8
    backend: str  # one of BACKENDS
    model_file: str  # relative to the bundle directory
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    layout: str = "NCHW"  # of the input tensor: NCHW or NHWC
    strides: list[int] = field(default_factory=lambda: [8, 16, 32])
    reg_max: int = 16
    color: str = "RGB"
    normalization: dict[str, Any] = field(
        default_factory=lambda: {"scale": 1 / 255.0, "mean": [0.0, 0.0, 0.0], "pad_value": 114}
    )
    quantization: str = "none"  # none | fp16-weights | weights-only | full-integer | qdq
    calibration: Calibration | None = None
    source_checkpoint_sha256: str = ""
    accuracy: dict[str, Any] = field(default_factory=dict)
    references: list[str] = field(default_factory=list)  # .npz files: input + expected outputs
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    edge_yolo_version: str = ""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise BundleError(f"unknown backend {self.backend!r}; known: {', '.join(BACKENDS)}")
        if self.layout not in ("NCHW", "NHWC"):
            raise BundleError(f"layout must be NCHW or NHWC, got {self.layout!r}")
        if len(self.imgsz) != 2:
            raise BundleError(f"imgsz must be [height, width], got {self.imgsz!r}")
        if not self.edge_yolo_version:
            from edge_yolo import __version__

            self.edge_yolo_version = __version__

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def output(self, name: str) -> TensorSpec:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise BundleError(f"metadata has no output named {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<metadata>") -> BundleMeta:
        if not isinstance(data, dict):
            raise BundleError(f"{source}: metadata is not a JSON object")
        version = data.get("format_version", 0)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise BundleError(
                f"{source}: bundle format {version!r} is newer than this edge-yolo reads "
                f"({FORMAT_VERSION}); upgrade edge-yolo"
            )
        refuse_unknown_keys(data, {f.name for f in dataclasses.fields(cls)}, source, BundleError)
        try:
            d = dict(data)
            d["inputs"] = [TensorSpec(**t) for t in d.get("inputs", [])]
            d["outputs"] = [TensorSpec(**t) for t in d.get("outputs", [])]
            if d.get("calibration") is not None:
                d["calibration"] = Calibration(**d["calibration"])
            return cls(**d)
        except TypeError as e:
            raise BundleError(f"{source}: malformed metadata ({e})") from e

    @classmethod
    def from_json(cls, text: str, source: str = "<metadata>") -> BundleMeta:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise BundleError(f"{source}: metadata is not valid JSON ({e})") from e
        return cls.from_dict(data, source)

    @classmethod
    def read(cls, path: str | os.PathLike) -> BundleMeta:
        path = Path(path)
        if path.is_dir():
            path = path / META_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise BundleError(f"{path}: cannot read bundle metadata ({e.strerror})") from e
        return cls.from_json(text, str(path))

    def write(self, bundle_dir: str | os.PathLike) -> Path:
        return atomic_write_text(Path(bundle_dir) / META_FILE, self.to_json() + "\n")
