"""What an export target implements.

How a target plugs in (``rpi``, ``intel``, ``jetson``, ``onnx`` all do it this way):

1. Add a row to :data:`edge_yolo.export.targets.TARGETS` naming ``"module:Class"``, the
   shared options it honours and its own options (each with its CLI flag).
2. In that module, subclass :class:`Exporter` and implement ``build(job, staging)``:
   write the model file(s) into the ``staging`` directory and return an :class:`Artifact`
   (model file name, input/output :class:`TensorSpec`s with real shapes, dtypes and quant
   params, layout, what ``quantization`` means, target facts for ``extra``). Use
   ``job.model`` (fused float :class:`~edge_yolo.models.ExportModel`, eval mode),
   ``job.example_input()``, ``job.calibration()`` (the :class:`~edge_yolo.quant.CalibrationSet`;
   calling it records the provenance) and ``job.target_options`` (your options dataclass,
   declared as the class attribute ``options_type``). How to quantize lives in
   :mod:`edge_yolo.quant`; an exporter only packages.
3. Optionally override ``embed_metadata(model_path, meta)`` (put the JSON inside the model
   file under ``META_KEY``) and ``readme_section(meta, job)`` (board-specific run notes).

:func:`edge_yolo.export.pipeline.run_export` does the rest, identically for every target.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..runtime.bundle import BundleMeta, TensorSpec
from .job import ExportJob
from .options import REFERENCE_FILE, ExportError, ExportOptions

__all__ = ["REFERENCE_FILE", "Artifact", "ExportError", "ExportJob", "ExportOptions", "Exporter"]


@dataclass
class Artifact:
    """What a target's ``build`` produced in the staging directory."""

    model_file: str  # relative to the bundle directory
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    quantization: str = "none"  # none | fp16-weights | weights-only | full-integer | qdq
    layout: str = "NCHW"
    extra: dict[str, Any] = field(default_factory=dict)


class Exporter(ABC):
    """One export target. Subclasses implement :meth:`build`; see the module docstring."""

    #: dataclass of this target's extra options (None: it has none)
    options_type: ClassVar[type | None] = None

    @abstractmethod
    def build(self, job: ExportJob, staging: Path) -> Artifact:
        """Write the model file(s) into ``staging`` and describe them."""

    def embed_metadata(self, model_path: Path, meta: BundleMeta) -> None:  # noqa: B027
        """Store ``meta.to_json()`` inside the model file under META_KEY, if the format can."""

    def readme_section(self, meta: BundleMeta, job: ExportJob) -> str:
        """Board-specific instructions for the bundle's README.md (Markdown)."""
        return ""


def options_dict(obj: Any) -> dict[str, Any]:
    """A dataclass (or None) as a JSON-friendly dict, for the bundle's ``extra``."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else {}
