"""What a QAT checkpoint holds, readable without the quantization stack: the per-target
schemes, the quantizer setup as JSON text (so ``torch.load(weights_only=True)`` reads the
file) and the function that puts the quantizers back on a fused model. The model loader
(:mod:`edge_yolo.models.checkpoint`) calls :func:`restore_quantizers`; NNCF itself is imported
only when a QAT checkpoint is actually loaded.
"""

from __future__ import annotations

import enum
import json
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..errors import EdgeYoloError
from .nncf_setup import quiet_nncf

if TYPE_CHECKING:
    from torch import nn

    from ..models.gelan import YOLO

#: QAT variants: which loss fine-tunes the quantized model
VARIANTS = ("pgi", "distill", "task")
QAT_FORMAT_VERSION = 1


class QATError(EdgeYoloError, ValueError):
    """A QAT run or checkpoint that cannot be used as asked; the message says why."""


@dataclass(frozen=True)
class QATScheme:
    """How one target's runtime quantizes, as NNCF settings."""

    target: str
    preset: str  # NNCF preset: mixed (asymmetric activations) | performance (symmetric)
    signed_activations: bool  # force signed int8 activations (TensorRT)
    overflow_fix: str  # "auto": as PTQ resolves it for this CPU; else an NNCF OverflowFix value
    description: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SCHEMES: dict[str, QATScheme] = {
    "intel": QATScheme(  # the PTQ default: symmetric, the CPU plugin's fast i8 kernels
        "intel", "performance", False, "auto",
        "int8 weights symmetric per output channel; int8 activations symmetric per tensor "
        "(OpenVINO CPU)",
    ),
    "rpi": QATScheme(
        "rpi", "mixed", False, "disable",
        "int8 weights symmetric per output channel (127 levels); int8 activations asymmetric "
        "per tensor (TFLite)",
    ),
    "jetson": QATScheme(
        "jetson", "performance", True, "disable",
        "int8 weights symmetric per output channel (zero point 0); int8 activations symmetric "
        "signed per tensor (zero point 0): TensorRT's explicit quantization",
    ),
}


def quantizer_config(model: nn.Module) -> str:
    """NNCF's description of where the quantizers sit and how they are set up, as JSON text
    (plain text keeps the checkpoint readable with ``weights_only=True``)."""
    import nncf.torch

    def plain(o: Any) -> Any:
        if isinstance(o, enum.Enum):
            return o.value
        raise TypeError(f"cannot store {type(o).__name__} in a QAT checkpoint")

    return json.dumps(nncf.torch.get_config(model), default=plain, sort_keys=True)


def restore_quantizers(model: YOLO, config: str) -> YOLO:
    """Put the quantizers described by :func:`quantizer_config` back on a fused model (their
    values come with the checkpoint's ``state_dict``)."""
    import nncf.torch
    from nncf.common.quantization.structs import QuantizationScheme

    try:
        doc = json.loads(config)
        for entry in doc["compression_state"]:
            module_config = entry["module_config"]
            if "mode" in module_config:
                module_config["mode"] = QuantizationScheme(module_config["mode"])
            if "scale_shape" in module_config:
                module_config["scale_shape"] = tuple(module_config["scale_shape"])
    except (ValueError, KeyError, TypeError) as e:
        raise QATError(f"the checkpoint's quantizer setup is unreadable ({e})") from e
    with quiet_nncf():
        return nncf.torch.load_from_config(model, doc)


def is_quantized(model: Any) -> bool:
    return any(k.startswith("__nncf_hooks.") for k in model.state_dict())


def check_record(record: Any, path: str | os.PathLike) -> dict[str, Any]:
    """Refuse a ``qat`` entry this edge-yolo cannot rebuild."""
    if not isinstance(record, dict) or not isinstance(record.get("nncf_config"), str):
        raise QATError(f"{path}: the checkpoint's 'qat' entry has no quantizer setup")
    if record.get("version", 0) > QAT_FORMAT_VERSION:
        raise QATError(f"{path}: QAT format {record.get('version')} is newer than this edge-yolo")
    if record.get("target") not in SCHEMES:
        raise QATError(f"{path}: QAT target {record.get('target')!r} is unknown")
    return record
