"""The artifact bundle's metadata (``edge_yolo.json``), shared by exporters and the runtime.

A bundle is a directory ``<name>-<target>-<precision>/`` holding the model file(s) and this
metadata; the same JSON is embedded in the model file where the format allows (ONNX
``metadata_props``, OpenVINO ``rt_info``, TFLite metadata) under the key :data:`META_KEY`, so
a lone model file still loads. Parsed into dataclasses, never evaluated. numpy-only.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_text

FORMAT_VERSION = 1
META_FILE = "edge_yolo.json"
META_KEY = "edge_yolo"

BACKENDS = ("onnxruntime", "openvino", "tflite", "tensorrt", "torch")


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
    sha256: str = ""  # hash over the calibration images' bytes, in order


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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BundleError(f"{source}: unknown metadata keys {unknown}")
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


def read_embedded(model_path: str | os.PathLike) -> BundleMeta:
    """The metadata embedded in a lone model file under :data:`META_KEY`.

    Each format is read with its own runtime library (imported here, lazily): onnxruntime for
    ONNX ``metadata_props``, OpenVINO for IR ``rt_info``, the LiteRT flatbuffer schema for
    TFLite metadata. A damaged file raises :class:`BundleError` naming it.
    """
    path = Path(model_path)
    suffix = path.suffix.lower()
    readers = {".onnx": _embedded_onnx, ".xml": _embedded_openvino, ".tflite": _embedded_tflite}
    reader = readers.get(suffix)
    if reader is None:
        raise BundleError(
            f"{path}: {suffix or 'this file'} files carry no embedded edge-yolo metadata"
        )
    if not path.is_file():
        raise BundleError(f"{path}: no such model file")
    text = reader(path)
    if text is None:
        raise BundleError(
            f"{path}: the model file has no '{META_KEY}' metadata; load the bundle directory "
            f"(with its {META_FILE}) instead of the lone file"
        )
    return BundleMeta.from_json(text, f"{path} (embedded metadata)")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _embedded_onnx(path: Path) -> str | None:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise BundleError(
            f"{path}: not a loadable ONNX model, truncated or corrupt? ({_first_line(e)})"
        ) from e
    return session.get_modelmeta().custom_metadata_map.get(META_KEY)


def _embedded_openvino(path: Path) -> str | None:
    import openvino as ov

    try:
        model = ov.Core().read_model(str(path))
    except Exception as e:
        raise BundleError(
            f"{path}: not a loadable OpenVINO IR (.xml + .bin), truncated or corrupt? "
            f"({_first_line(e)})"
        ) from e
    if not model.has_rt_info([META_KEY]):
        return None
    value = model.get_rt_info([META_KEY])
    value = value.astype(str) if hasattr(value, "astype") else value
    return value if isinstance(value, str) else json.dumps(value)


def _embedded_tflite(path: Path) -> str | None:
    # Our own bounds-checked flatbuffer reader: needs no TFLite package, so a lone .tflite
    # opens on a device that only has tflite-runtime.
    from .backends.tflite import TFLiteFile

    try:
        raw = TFLiteFile(path.read_bytes()).metadata(META_KEY)
        return None if raw is None else raw.decode("utf-8")
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(
            f"{path}: not a readable TFLite model, truncated or corrupt? ({_first_line(e)})"
        ) from e
