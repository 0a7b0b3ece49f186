"""The small interface every runtime backend implements.

A backend wraps one runtime library (imported lazily, inside the backend) and turns a
preprocessed input blob into the model's two raw outputs in canonical layout. Everything
before (letterbox, colour, normalisation) and after (decode, NMS) is shared numpy code in
:mod:`edge_yolo.runtime.processing`; a backend never post-processes.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ...contract import OUTPUT_NAMES, num_anchors
from ...errors import EdgeYoloError
from ..bundle import META_FILE, META_KEY, BundleError, BundleMeta


class BackendError(EdgeYoloError, RuntimeError):
    """A model file the runtime cannot load or run; the message names the file."""


class Backend(ABC):
    name: str = ""
    #: Python package(s) the backend imports, for the "not installed" message.
    requires: tuple[str, ...] = ()
    #: True when :meth:`infer` also takes the letterboxed images themselves, uint8 BGR
    #: ``(B, H, W, 3)``, and normalizes them inside the runtime: the Detector then skips the
    #: float blob (its cost is most of the pre-processing). A float blob still works.
    takes_uint8: bool = False
    #: what this runtime on this machine may get wrong with this bundle (one line), or None;
    #: the Detector logs it at load and ``verify`` prints it
    caveat: str | None = None

    def __init__(
        self,
        model_path: Path,
        meta: BundleMeta,
        *,
        threads: int | None = None,
        device: str | None = None,
        **options: Any,
    ) -> None:
        self.model_path = Path(model_path)
        self.meta = meta
        self.threads = threads or default_threads()
        self.threads_given = threads is not None
        self.device = device
        self.load(**options)

    @abstractmethod
    def load(self) -> None:
        """Open ``self.model_path`` with the runtime library and check it against
        ``self.meta`` (:meth:`check_io`); a backend-specific keyword option may follow."""

    @classmethod
    @abstractmethod
    def available(cls) -> bool:
        """True when the backend's runtime library can be imported here."""

    @classmethod
    def read_metadata(cls, model_path: Path) -> BundleMeta:
        """The metadata embedded in a lone model file (a bundle has ``edge_yolo.json`` instead),
        parsed and checked; :class:`BundleError` names the file."""
        path = Path(model_path)
        if not path.is_file():
            raise BundleError(f"{path}: no such model file")
        text = cls.embedded_metadata(path)
        if text is None:
            raise BundleError(
                f"{path}: the model file has no '{META_KEY}' metadata; load the bundle directory "
                f"(with its {META_FILE}) instead of the lone file"
            )
        return BundleMeta.from_json(text, f"{path} (embedded metadata)")

    @classmethod
    def embedded_metadata(cls, model_path: Path) -> str | None:
        """The JSON text stored under ``META_KEY`` inside a model file of this backend's format
        (None when absent); :class:`BundleError` when the file cannot be read as that format."""
        raise BundleError(
            f"{model_path}: {model_path.suffix or 'this file'} files carry no embedded edge-yolo "
            f"metadata; load the bundle directory (with its {META_FILE}) instead"
        )

    @classmethod
    def missing_message(cls) -> str:
        """Why :meth:`available` is False, naming the package to install."""
        pkgs = " or ".join(repr(p) for p in cls.requires) or "its runtime library"
        return f"the {cls.name} backend needs the {pkgs} package, which is not importable here"

    @property
    def max_batch(self) -> int:
        """Largest batch one ``infer`` call takes (1 for static-shape models)."""
        return 1

    def split_batch(
        self, blob: np.ndarray, fixed: int | None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """For a model whose batch dimension is fixed at ``fixed``: the outputs of a batch of
        another size run one image at a time (batch-1 models), else None (run it as it is)."""
        if fixed is None or blob.shape[0] == fixed:
            return None
        if fixed != 1:
            raise BackendError(
                f"{self.model_path}: the model takes batches of {fixed}, got {blob.shape[0]}"
            )
        parts = [self.infer(blob[i : i + 1]) for i in range(blob.shape[0])]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    @abstractmethod
    def infer(self, blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the model.

        ``blob``: float32 ``(B, 3, H, W)`` (or ``(B, H, W, 3)`` when ``meta.layout`` is NHWC),
        RGB in [0, 1]. The backend quantizes it when the model takes integers. A backend with
        :attr:`takes_uint8` also takes the letterboxed uint8 BGR images ``(B, H, W, 3)``.
        Returns ``box_dist (B, 4*reg_max, A)`` and ``cls_logits (B, nc, A)`` as float32,
        dequantized and transposed to this canonical layout whatever the file stores.
        """

    @property
    def in_flight(self) -> int:
        """Images :meth:`submit` may have running at once; 1 where :meth:`infer` blocks."""
        return 1

    def submit(self, blob: np.ndarray) -> Any:
        """Start inference on ``blob``; :meth:`collect` with the returned handle gives the
        outputs. Here it runs to the end at once; a runtime with asynchronous requests
        (OpenVINO) returns while it computes."""
        return self.infer(blob)

    def collect(self, handle: Any) -> tuple[np.ndarray, np.ndarray]:
        """The outputs of a :meth:`submit`, as :meth:`infer` returns them (waits if needed)."""
        return handle

    def check_io(
        self, input_shape: tuple[int, ...], output_shapes: dict[str, tuple[int, ...]]
    ) -> None:
        """Refuse metadata that contradicts the model file's real input/output shapes."""
        meta = self.meta
        h, w = meta.imgsz
        want = (3, h, w) if meta.layout == "NCHW" else (h, w, 3)
        got = tuple(
            int(d) if isinstance(d, (int, np.integer)) and d > 0 else -1 for d in input_shape
        )
        if len(got) != 4 or any(g not in (-1, e) for g, e in zip(got[1:], want)):
            raise BackendError(
                f"{self.model_path}: metadata says input {meta.layout} {list(want)} but the model "
                f"takes {list(input_shape)}"
            )
        anchors = num_anchors(h, w, meta.strides)
        expect = dict(zip(OUTPUT_NAMES, (4 * meta.reg_max, meta.num_classes)))
        for name, channels in expect.items():
            shape = output_shapes.get(name)
            if shape is None:
                raise BackendError(
                    f"{self.model_path}: model has no output named {name!r} "
                    f"(outputs: {sorted(output_shapes)})"
                )
            dims = [int(d) for d in shape[1:] if isinstance(d, (int, np.integer)) and d > 0]
            if sorted(dims) != sorted([channels, anchors]):
                raise BackendError(
                    f"{self.model_path}: output {name!r} has shape {list(shape)}, but the metadata "
                    f"({meta.num_classes} classes, {h}x{w} input) implies {channels} x {anchors}"
                )


class Done(NamedTuple):
    """A :meth:`Backend.submit` that ran to the end at once: ``collect`` returns its outputs."""

    outputs: tuple[np.ndarray, np.ndarray]


def default_threads() -> int:
    """All cores the process may use (TFLite and OpenVINO default to these too)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
