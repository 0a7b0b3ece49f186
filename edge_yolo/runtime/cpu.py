"""What the CPU can do, read from ``/proc/cpuinfo`` (standard library only).

Both sides use it: quantization picks NNCF's overflow fix from the int8 dot-product
instructions, and the runtime reports what the CPU runs fast.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

#: int8 dot-product instructions (x86): without one, int8 convolutions go through 16-bit sums
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags (``flags`` on x86, ``Features`` on ARM); empty when unreadable."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_vnni(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True when the CPU has an int8 dot-product instruction (AVX512-VNNI, AVX-VNNI, AMX)
    and oneDNN (OpenVINO's CPU kernels) may use it: ``ONEDNN_MAX_CPU_ISA`` set to an ISA
    below VNNI (``AVX2``, ``AVX512_CORE``) makes this CPU compute like one without it."""
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if limit != "ALL" and not any(isa in limit for isa in ("VNNI", "BF16", "FP16", "AMX")):
        return False
    return bool(cpu_flags(cpuinfo) & set(VNNI_FLAGS))


def int8_saturation_risk(meta: object, has_vnni: bool | None = None) -> str | None:
    """Why an OpenVINO int8 bundle's convolutions can saturate on this CPU, or None.

    Without VNNI, OpenVINO's int8 convolutions add pairs of products in 16 bits (pmaddubsw),
    which full 8-bit weights overflow; NNCF's overflow fix (7-bit weights) prevents it. A
    bundle quantized on a VNNI machine records ``overflow_fix: disable``: on an AVX2-only CPU
    its scores moved by up to 0.25 (``edge-yolo verify`` fails), re-exported with
    ``--overflow-fix enable`` it gave the reference outputs to the bit on both.
    """
    extra = getattr(meta, "extra", {}) or {}
    fix = extra.get("overflow_fix")
    if getattr(meta, "precision", None) != "int8" or fix in (None, "enable"):
        return None
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return None  # other CPUs' int8 kernels do not add in 16 bits
    if cpu_has_vnni() if has_vnni is None else has_vnni:
        return None
    return (f"this int8 bundle was quantized for CPUs with VNNI (NNCF overflow fix "
            f"{fix!r}), and this CPU has none: its int8 convolutions can saturate; export it "
            "again with --overflow-fix enable for this CPU")
