"""What the CPU can do, read from ``/proc/cpuinfo`` (standard library only).

Both sides use it: quantization picks NNCF's overflow fix from the int8 dot-product
instructions, and the runtime reports what the CPU runs fast.
"""

from __future__ import annotations

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
    """True when the CPU has an int8 dot-product instruction (AVX512-VNNI, AVX-VNNI, AMX)."""
    return bool(cpu_flags(cpuinfo) & set(VNNI_FLAGS))
