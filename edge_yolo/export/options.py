"""The options every export shares, and the export error."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import EdgeYoloError
from .targets import TargetError

REFERENCE_FILE = "reference.npz"


class ExportError(EdgeYoloError, RuntimeError):
    """An export that could not be completed; the message says which step and why."""


@dataclass
class ExportOptions:
    """What to export and how; shared by every target (per-target extras in ``target_options``).

    ``dynamic``, ``opset`` and ``simplify`` are None unless set: a target that does not honour
    one refuses it (the capability table says which take which).
    """

    target: str  # a target in TARGETS, a board profile or a profile file
    precision: str | None = None  # None: the board's or the target's default
    imgsz: int | None = None  # square input side; None: board, else checkpoint, else 640
    calib: str | None = None  # dataset spec or image folder; None: the checkpoint's dataset
    calib_size: int | None = None  # None: the board's calib_size, else 300
    calib_split: str = "train"  # the dataset split calibration images are drawn from
    dynamic: bool | None = None  # dynamic batch dimension (static shapes otherwise)
    out: str | os.PathLike = "exports"  # directory the bundle directory is written into
    name: str | None = None  # bundle directory name; None: <model>-<board or target>-<precision>
    force: bool = False  # replace a bundle of the same name (else refused)
    simplify: bool | None = None  # onnxslim on ONNX graphs (default on)
    opset: int | None = None  # ONNX opset (default 18; 17 for TensorRT 8.x, see export/onnx.py)
    threads: int | None = None  # threads for the host-side verification run
    num_references: int = 2  # letterboxed inputs + expected outputs saved in reference.npz
    agreement_images: int = 8  # images on which the artifact is compared with the float model
    target_options: Any = None  # the target's options_type instance, or a dict of its fields
    #: int8: keep the blocks most sensitive to int8 in float until the measured mAP50-95 drop
    #: (points, on the calibration source's labelled val split) is at most this
    max_drop: float | None = None

    def __post_init__(self) -> None:
        if self.imgsz is not None and (self.imgsz <= 0 or self.imgsz % 32):
            raise TargetError(f"imgsz must be a positive multiple of 32, got {self.imgsz}")
        if self.calib_size is not None and self.calib_size <= 0:
            raise TargetError(f"calib_size must be positive, got {self.calib_size}")
        if self.opset is not None and not 17 <= self.opset <= 18:
            raise TargetError(f"opset must be 17 or 18, got {self.opset}")
        if self.max_drop is not None and self.max_drop < 0:
            raise TargetError(f"max_drop must be >= 0, got {self.max_drop}")
        if self.threads is not None and self.threads < 1:
            raise TargetError(f"threads must be >= 1, got {self.threads}")
