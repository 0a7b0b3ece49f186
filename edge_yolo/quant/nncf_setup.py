"""NNCF on this host: where its C++ kernels are built, and keeping its output quiet.

NNCF compiles a torch C++ extension on first use. :func:`prepare_extensions` makes the cache
location and the build timeout explicit, removes a build lock a killed process left behind
(torch's build waits on it forever), and says in the progress output what is happening.
:func:`quiet_nncf` keeps NNCF's INFO lines and progress bars out of our output.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: NNCF's load timeout: none. A build takes 20-80 s here but longer on a loaded machine, and a
#: build that NNCF abandons at its timeout leaves a lock behind that blocks every later run.
EXTENSION_TIMEOUT_S = 0
#: a build lock older than this is left over from a killed build (a build takes 20-80 s)
STALE_LOCK_S = 300


def extensions_dir() -> Path:
    """Where NNCF's compiled torch kernels live: ``$TORCH_EXTENSIONS_DIR`` when set, else
    ``~/.cache/edge-yolo/torch_extensions`` (one per user, reused by every run)."""
    env = os.environ.get("TORCH_EXTENSIONS_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edge-yolo" / (
        "torch_extensions"
    )


def prepare_extensions(log: Callable[[str], None] = print) -> Path:
    """Set NNCF's extension cache and build timeout explicitly, remove a stale build lock and
    build the CPU kernels now, saying so (a first build takes 20-60 s on 2 cores)."""
    root = extensions_dir()
    root.mkdir(parents=True, exist_ok=True)
    os.environ["TORCH_EXTENSIONS_DIR"] = str(root)
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", str(EXTENSION_TIMEOUT_S))
    now = time.time()
    for lock in root.rglob("lock"):
        age = now - lock.stat().st_mtime
        if age > STALE_LOCK_S:
            log(f"removing a stale build lock left by a killed build ({age / 60:.0f} min old): "
                f"{lock}")
            lock.unlink(missing_ok=True)
        else:
            log(f"NNCF: another process is building its kernels ({lock}, {age:.0f} s old); "
                "waiting for it")
    built = any(root.rglob("quantized_functions_cpu*.so"))
    if not built:
        log(f"NNCF: compiling its C++ quantization kernels into {root} (first use only, "
            "20-80 s on 2 cores) ...")
    t0 = time.perf_counter()
    with quiet_nncf():
        from nncf.torch import force_build_cpu_extensions

        try:
            force_build_cpu_extensions()
        except Exception as e:  # a compiler missing or a timeout: NNCF falls back to torch ops
            log(f"NNCF: its C++ kernels did not build ({str(e).splitlines()[0]}); using its "
                "slower pure-torch kernels")
            return root
    if not built:
        log(f"NNCF: kernels ready ({time.perf_counter() - t0:.0f} s)")
    return root


@contextlib.contextmanager
def quiet_nncf() -> Iterator[None]:
    """NNCF logs INFO lines (extension builds, algorithm steps) and draws its own progress
    bars: our output says what is happening instead. Its logger stays at WARNING once we have
    used it (the extension also loads lazily, at a model's first forward pass)."""
    logging.getLogger("nncf").setLevel(logging.WARNING)
    with _no_progress_bars():
        yield


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """NNCF draws rich progress bars on stdout whatever its logger's level: switch them off
    (its ``track`` class takes ``disable``; every algorithm imports the class itself)."""
    try:
        from nncf.common.logging.track_progress import track
    except ImportError:  # pragma: no cover - layout of a future NNCF
        yield
        return
    original = track.__init__

    def disabled(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        original(self, *args, **kwargs)

    track.__init__ = disabled  # type: ignore[method-assign]
    try:
        yield
    finally:
        track.__init__ = original  # type: ignore[method-assign]
