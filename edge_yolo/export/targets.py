"""The capability table (what each export target can produce) and the board profiles.

Every export starts here: :func:`resolve` turns ``--target`` (a target or a board name from
``devices/``) and ``--precision`` into a :class:`TargetSpec`, refusing an unsupported
combination with the list of what is supported, before any model is loaded. torch-free, so
``edge-yolo export --help`` and the device-profile checks stay cheap.

Every option is in the table too: the shared ones (:data:`SHARED_OPTIONS`: dynamic batch,
ONNX opset, graph simplification) by the targets that honour them, and each target's own
options with their CLI flags. An option a target does not honour is refused, naming both.

Adding a target = one row in :data:`TARGETS`, one exporter module implementing
:class:`edge_yolo.export.base.Exporter`, one runtime backend, one device profile, one test.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cli_args import positive_int
from ..errors import EdgeYoloError, refuse_unknown_keys
from ..quant.ptq import CALIBRATE_METHODS, OVERFLOW_FIXES, PRESETS, TFLITE_RANGES

PRECISIONS = ("fp32", "fp16", "bf16", "int8")


class TargetError(EdgeYoloError, ValueError):
    """An export target, precision or device profile that cannot be used; says what can."""


@dataclass(frozen=True)
class Option:
    """One export option: the field it sets and the CLI flag that sets it.

    ``field`` is an :class:`~edge_yolo.export.base.ExportOptions` field for a shared option,
    else a field of the target's options dataclass. ``kind``: ``int``, ``str``, or ``bool``
    for a switch (which stores ``not negate``).
    """

    field: str
    flag: str
    help: str
    kind: Callable[[str], Any] = str
    choices: tuple[Any, ...] | None = None
    negate: bool = False


#: Options that several targets share; each target lists the ones it honours.
SHARED_OPTIONS: dict[str, Option] = {
    "dynamic": Option("dynamic", "--dynamic", "dynamic batch dimension", bool),
    "opset": Option("opset", "--opset", "ONNX opset: 18 (default) or 17 for TensorRT 8.x", int,
                    (17, 18)),
    "simplify": Option("simplify", "--no-simplify", "skip onnxslim", bool, negate=True),
}


@dataclass(frozen=True)
class TargetSpec:
    """One row of the capability table."""

    name: str
    backend: str  # runtime backend the bundle's metadata names (edge_yolo.contract.BACKENDS)
    precisions: tuple[str, ...]
    default_precision: str
    exporter: str  # "module:Class" of the Exporter subclass, imported only when exporting
    description: str
    install: str  # install line for running the bundle (a board profile may refine it)
    #: backend that runs the artifact on the export host for references/agreement, when the
    #: device backend does not exist here (TensorRT engines are built on the Jetson).
    host_backend: str = ""
    shared_options: tuple[str, ...] = ()  # keys of SHARED_OPTIONS this target honours
    options: tuple[Option, ...] = ()  # this target's own options (fields of its options_type)

    @property
    def verify_backend(self) -> str:
        return self.host_backend or self.backend


TARGETS: dict[str, TargetSpec] = {
    "onnx": TargetSpec(
        name="onnx",
        backend="onnxruntime",
        precisions=("fp32",),
        default_precision="fp32",
        exporter="edge_yolo.export.onnx:OnnxExporter",
        description="plain ONNX (opset 18, 17 on request) for onnxruntime anywhere",
        install="pip install 'edge-yolo[onnx]'",
        shared_options=("dynamic", "opset", "simplify"),
    ),
    "intel": TargetSpec(
        name="intel",
        backend="openvino",
        precisions=("fp32", "fp16", "bf16", "int8"),
        default_precision="fp32",
        exporter="edge_yolo.export.openvino:OpenVINOExporter",
        description="OpenVINO IR; bf16 computed on CPUs with BF16; int8 by NNCF PTQ",
        install="pip install 'edge-yolo[openvino]'",
        shared_options=("dynamic",),
        options=(
            Option("preset", "--nncf-preset",
                   "int8: NNCF preset (default performance: symmetric, fastest on CPU)", str,
                   PRESETS),
            Option("overflow_fix", "--overflow-fix",
                   "int8: NNCF overflow fix (default auto: on without VNNI)", str, OVERFLOW_FIXES),
        ),
    ),
    "jetson": TargetSpec(
        name="jetson",
        backend="tensorrt",
        precisions=("fp32", "fp16", "int8"),
        default_precision="fp16",
        exporter="edge_yolo.export.jetson:JetsonExporter",
        description="ONNX for TensorRT: plain (fp32/fp16 engine) or explicit Q/DQ (int8)",
        install="pip install edge-yolo  # TensorRT and its Python bindings come with JetPack",
        host_backend="onnxruntime",
        shared_options=("dynamic", "opset", "simplify"),
        options=(
            Option("calibrate_method", "--calibrate-method",
                   "int8: activation range method (default minmax)", str, CALIBRATE_METHODS),
            Option("workspace_mib", "--workspace-mib",
                   "TensorRT builder workspace in MiB for the README's trtexec line",
                   positive_int),
        ),
    ),
    "rpi": TargetSpec(
        name="rpi",
        backend="tflite",
        precisions=("fp32", "fp16", "int8"),
        default_precision="fp32",
        exporter="edge_yolo.export.tflite:TFLiteExporter",
        description="TFLite (LiteRT); int8 = full-integer static quantization",
        install="pip install 'edge-yolo[tflite]'",
        options=(
            Option("calib_ranges", "--calib-ranges",
                   "int8: activation ranges over the calibration set (default minmax)", str,
                   tuple(TFLITE_RANGES)),
            Option("exact_input_range", "--calibrated-input-range",
                   "int8: quantize the input with its calibrated range instead of exactly [0, 1]",
                   bool, negate=True),
            Option("calib_threads", "--calib-threads",
                   "int8: threads of the calibration interpreter (default all cores)",
                   positive_int),
            Option("qat_ranges", "--calibrated-qat-ranges",
                   "int8 from a QAT checkpoint: calibrate every activation range instead of "
                   "carrying the learned ones", bool, negate=True),
        ),
    ),
}


def capability_table() -> str:
    """The table as text, for ``--help`` and error messages."""
    rows = [f"  {t.name:<7} {t.backend:<12} {'/'.join(t.precisions):<15} {t.description}"
            for t in TARGETS.values()]
    return "\n".join(["  target  backend      precisions      what", *rows])


def check_target(target: str, precision: str | None = None) -> TargetSpec:
    """The target's spec; refuses unknown targets and unsupported precisions, naming the options."""
    spec = TARGETS.get(target)
    if spec is None:
        boards = ", ".join(list_devices()) or "none"
        raise TargetError(
            f"unknown export target {target!r}; targets: {', '.join(TARGETS)}; boards: {boards}"
        )
    if precision is not None and precision not in spec.precisions:
        raise TargetError(
            f"target {target!r} does not support precision {precision!r}; supported: "
            f"{', '.join(spec.precisions)}"
        )
    return spec


# ----------------------------------------------------------------------------- device profiles


@dataclass(frozen=True)
class DeviceProfile:
    """One board: what to export for it and how to run it there (``devices/<board>.yaml``)."""

    name: str
    target: str  # export target in TARGETS
    backend: str  # runtime backend on the board
    precision: str
    imgsz: int
    threads: int
    install: str  # the install line on the board
    description: str = ""
    calib_size: int = 300
    notes: str = ""
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        where = self.source or f"device profile {self.name!r}"
        try:
            spec = check_target(self.target, self.precision)
        except TargetError as e:
            raise TargetError(f"{where}: {e}") from None
        if self.backend != spec.backend:
            raise TargetError(
                f"{where}: backend {self.backend!r} does not match target {self.target!r} "
                f"(which produces {spec.backend!r})"
            )
        for key in ("imgsz", "threads", "calib_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise TargetError(f"{where}: {key} must be a positive integer, got {value!r}")
        if self.imgsz % 32:
            raise TargetError(f"{where}: imgsz {self.imgsz} is not a multiple of the stride 32")


def devices_dir() -> Path:
    """Where board profiles live: $EDGE_YOLO_DEVICES, else the package's own ``devices/``
    (package data: found in an installed wheel as in a checkout)."""
    env = os.environ.get("EDGE_YOLO_DEVICES")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "devices"


def list_devices() -> list[str]:
    d = devices_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def load_device(name_or_path: str | os.PathLike) -> DeviceProfile:
    """Load a board profile by name (``rpi5``) or path, refusing unknown or missing keys."""
    import yaml

    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = devices_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        raise TargetError(
            f"{path}: no such device profile; boards: {', '.join(list_devices()) or 'none'}"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise TargetError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise TargetError(f"{path}: a device profile is a mapping of keys to values")
    fields = {f.name: f for f in dataclasses.fields(DeviceProfile) if f.name != "source"}
    refuse_unknown_keys(data, fields, str(path), TargetError)
    data.setdefault("name", path.stem)
    required = [n for n, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in data]
    if missing:
        raise TargetError(f"{path}: missing key(s) {', '.join(missing)}")
    return DeviceProfile(**data, source=str(path))


def resolve(
    target: str, precision: str | None = None
) -> tuple[TargetSpec, str, DeviceProfile | None]:
    """``--target`` (target or board) + ``--precision`` -> (spec, precision, board profile).

    A board supplies the precision when none is given; an explicit precision overrides it.
    """
    device = None
    if target not in TARGETS:
        if target in list_devices() or Path(target).suffix in (".yaml", ".yml"):
            device = load_device(target)
            target = device.target
        else:
            check_target(target)  # raises with the list of targets and boards
    spec = check_target(target)
    precision = precision or (device.precision if device else spec.default_precision)
    check_target(target, precision)
    return spec, precision, device

