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
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract import BACKENDS
from ..errors import EdgeYoloError, option, refuse_unknown_keys
from ..fileio import atomic_write_text, sha256_file

FORMAT_VERSION = 1
META_FILE = "edge_yolo.json"
META_KEY = "edge_yolo"


class BundleError(EdgeYoloError, ValueError):
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
    #: SHA-256 of every file of the bundle but this metadata, by path relative to the bundle
    files: dict[str, str] = field(default_factory=dict)

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
        check_fields(data, source)
        try:
            d = dict(data)
            d["inputs"] = [TensorSpec(**t) for t in d.get("inputs", [])]
            d["outputs"] = [TensorSpec(**t) for t in d.get("outputs", [])]
            if d.get("calibration") is not None:
                d["calibration"] = Calibration(**d["calibration"])
            return cls(**d)
        except TypeError as e:
            raise BundleError(f"{source}: malformed metadata ({e})") from e

    def paths(self) -> dict[str, str]:
        """Every file path the metadata names, by the key that names it."""
        named = {"model_file": self.model_file}
        named.update({f"references[{i}]": p for i, p in enumerate(self.references)})
        named.update({f"files[{p!r}]": p for p in self.files})
        return named

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


# ------------------------------------------------------------------------ field checks


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _require(ok: bool, source: str, key: str, want: str, value: Any) -> None:
    if not ok:
        shown = repr(value)
        raise BundleError(f"{source}: {key} must be {want}, got {shown[:80]}")


DTYPES = ("float32", "float16", "int8", "uint8", "int16", "int32")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
QUANTIZATIONS = ("none", "fp16-weights", "weights-only", "full-integer", "qdq")
_STR_FIELDS = ("model", "target", "model_file", "source_checkpoint_sha256", "edge_yolo_version")
_DICT_FIELDS = ("accuracy", "extra", "normalization", "files")


def check_fields(data: dict[str, Any], source: str) -> None:
    """Type- and range-check raw metadata before it becomes a :class:`BundleMeta`, naming the
    file and the key: a value of the wrong type must fail here, not at the first frame."""
    for key in ("model", "names", "imgsz", "target", "precision", "backend", "model_file",
                "inputs", "outputs"):
        if key not in data:
            raise BundleError(f"{source}: metadata is missing {key!r}")
    for key in _STR_FIELDS:
        if key in data:
            _require(isinstance(data[key], str), source, key, "a string", data[key])
    for key in _DICT_FIELDS:
        if key in data:
            _require(isinstance(data[key], dict), source, key, "an object", data[key])
    names = data["names"]
    _require(isinstance(names, list) and names and all(isinstance(n, str) for n in names),
             source, "names", "a non-empty list of strings", names)
    imgsz = data["imgsz"]
    _require(isinstance(imgsz, list) and len(imgsz) == 2
             and all(_is_int(v) and 32 <= v <= 8192 and v % 32 == 0 for v in imgsz),
             source, "imgsz", "[height, width], multiples of 32 in 32..8192", imgsz)
    _require(data["precision"] in PRECISIONS, source, "precision",
             f"one of {', '.join(PRECISIONS)}", data["precision"])
    _require(data["backend"] in BACKENDS, source, "backend",
             f"one of {', '.join(BACKENDS)}", data["backend"])
    if "layout" in data:
        _require(data["layout"] in ("NCHW", "NHWC"), source, "layout", "NCHW or NHWC",
                 data["layout"])
    if "color" in data:
        _require(data["color"] in ("RGB", "BGR"), source, "color", "RGB or BGR", data["color"])
    if "quantization" in data:
        _require(data["quantization"] in QUANTIZATIONS, source, "quantization",
                 f"one of {', '.join(QUANTIZATIONS)}", data["quantization"])
    strides = data.get("strides", [8, 16, 32])
    _require(isinstance(strides, list) and len(strides) == 3
             and all(_is_int(v) and v in (8, 16, 32, 64) for v in strides),
             source, "strides", "three of 8, 16, 32, 64", strides)
    reg_max = data.get("reg_max", 16)
    _require(_is_int(reg_max) and 2 <= reg_max <= 64, source, "reg_max",
             "an integer in 2..64", reg_max)
    norm = data.get("normalization", {})
    if "scale" in norm:
        _require(_is_number(norm["scale"]) and norm["scale"] > 0, source,
                 "normalization.scale", "a positive number", norm["scale"])
    if "mean" in norm:
        _require(isinstance(norm["mean"], list) and len(norm["mean"]) == 3
                 and all(_is_number(v) for v in norm["mean"]), source, "normalization.mean",
                 "three numbers", norm["mean"])
    if "pad_value" in norm:
        _require(_is_int(norm["pad_value"]) and 0 <= norm["pad_value"] <= 255, source,
                 "normalization.pad_value", "an integer in 0..255", norm["pad_value"])
    for key in ("inputs", "outputs"):
        specs = data[key]
        _require(isinstance(specs, list) and all(isinstance(t, dict) for t in specs), source,
                 key, "a list of tensor objects", specs)
        for i, t in enumerate(specs):
            where = f"{key}[{i}]"
            _require(isinstance(t.get("name"), str), source, f"{where}.name", "a string",
                     t.get("name"))
            shape = t.get("shape")
            _require(isinstance(shape, list) and all(_is_int(d) and (d > 0 or d == -1)
                                                     for d in shape),
                     source, f"{where}.shape", "a list of positive sizes (-1: dynamic)", shape)
            dtype = t.get("dtype", "float32")
            _require(dtype in DTYPES, source, f"{where}.dtype", f"one of {', '.join(DTYPES)}",
                     dtype)
            scale, zero = t.get("scale"), t.get("zero_point")
            _require(scale is None or (_is_number(scale) and scale > 0), source,
                     f"{where}.scale", "a positive number or null", scale)
            _require(zero is None or (_is_int(zero) and -(2**31) <= zero < 2**31), source,
                     f"{where}.zero_point", "an integer or null", zero)
    references = data.get("references", [])
    _require(isinstance(references, list) and all(isinstance(r, str) for r in references),
             source, "references", "a list of file names", references)
    for name, digest in data.get("files", {}).items():
        _require(isinstance(digest, str) and len(digest) == 64
                 and all(c in "0123456789abcdef" for c in digest),
                 source, f"files[{name!r}]", "a SHA-256 hex digest", digest)
    calib = data.get("calibration")
    _require(calib is None or isinstance(calib, dict), source, "calibration",
             "an object or null", calib)
    for key in ("num_images", "requested"):
        if calib and key in calib:
            _require(_is_int(calib[key]) and calib[key] >= 0, source, f"calibration.{key}",
                     "a non-negative integer", calib[key])
    version = data.get("format_version", FORMAT_VERSION)
    _require(_is_int(version), source, "format_version", "an integer", version)


def inside(bundle: Path, relative: str, source: str, key: str) -> Path:
    """``bundle / relative``, refused unless it stays inside the bundle directory."""
    path = Path(relative)
    resolved = (bundle / path).resolve()
    if path.is_absolute() or not resolved.is_relative_to(bundle.resolve()):
        raise BundleError(f"{source}: {key} {relative!r} points outside the bundle")
    return bundle / path


def check_files(bundle: Path, meta: BundleMeta, source: str) -> None:
    """Every file the metadata lists has the SHA-256 recorded at export (streamed, so cheap);
    :class:`BundleError` names the first that does not."""
    if not meta.files:
        raise BundleError(
            f"{source}: the bundle records no file checksums (exported by edge-yolo before "
            f"0.2?): re-export it, or skip the check "
            f"({option('check_files', False, flag='--no-check-files')}) for a bundle verified "
            "another way"
        )
    for name in (meta.model_file, *meta.references):
        if name not in meta.files:
            raise BundleError(f"{source}: files has no checksum for {name!r}")
    for name, digest in meta.files.items():
        path = inside(bundle, name, source, f"files[{name!r}]")
        if not path.is_file():
            raise BundleError(f"{path}: listed in {META_FILE} but missing")
        if sha256_file(path) != digest:
            raise BundleError(
                f"{path}: the file differs from what was exported (SHA-256 mismatch): damaged "
                "or changed after export"
            )


def file_checksums(bundle: Path) -> dict[str, str]:
    """SHA-256 of every file under ``bundle`` except the metadata itself."""
    return {
        p.relative_to(bundle).as_posix(): sha256_file(p)
        for p in sorted(bundle.rglob("*"))
        if p.is_file() and p.name != META_FILE
    }
