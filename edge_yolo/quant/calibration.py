"""Calibration data for post-training quantization, and the CPU facts that shape it.

Calibration blobs are the images letterboxed and normalised exactly as the runtime does
(:func:`edge_yolo.runtime.processing.preprocess`), so the activation ranges the quantizer
measures are the ones the device will see.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags (Linux); empty when they cannot be read."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_vnni(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True when the CPU has an int8 dot-product instruction (AVX512-VNNI, AVX-VNNI, AMX)."""
    return bool(cpu_flags(cpuinfo) & set(VNNI_FLAGS))


def resolve_overflow_fix(setting: str, cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """``auto`` -> ``enable`` on CPUs without VNNI, ``disable`` with it; else the setting.

    Without VNNI, OpenVINO's int8 convolutions go through 16-bit pairwise sums (pmaddubsw)
    that saturate with full 8-bit weights; NNCF's overflow fix stores weights in 7 bits to
    avoid that. With VNNI it only costs accuracy.
    """
    allowed = ("auto", "enable", "first_layer_only", "disable")
    if setting not in allowed:
        raise ValueError(f"overflow_fix must be one of {', '.join(allowed)}, got {setting!r}")
    if setting != "auto":
        return setting
    return "disable" if cpu_has_vnni(cpuinfo) else "enable"


class BlobReader:
    """onnxruntime ``CalibrationDataReader`` protocol over preprocessed blobs."""

    def __init__(self, input_name: str, blobs: Sequence[np.ndarray]) -> None:
        self.input_name = input_name
        self.blobs = list(blobs)
        self._it: Iterator[np.ndarray] = iter(self.blobs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        blob = next(self._it, None)
        return None if blob is None else {self.input_name: blob}

    def rewind(self) -> None:
        self._it = iter(self.blobs)
