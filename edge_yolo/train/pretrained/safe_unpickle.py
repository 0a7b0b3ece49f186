"""Read the reference repository's pickled checkpoints without running pickled code.

WongKinYiu/yolov9 saves ``{'model': <whole DetectionModel>, 'ema': ..., ...}`` with
``torch.save``: unpickling it normally imports that repository's ``models.*`` classes and runs
whatever the pickle asks for. Here the pickle is first scanned for the globals it names
(``torch.serialization.get_unsafe_globals_in_checkpoint``, static, nothing executed); any
global outside an allow-list refuses the file with a message naming it. The allowed model
classes are then bound, by their reference names, to inert :class:`ModuleState` stand-ins
and the file is read by torch's own restricted ``weights_only`` unpickler, which only builds
tensors, plain containers and allow-listed classes. So no class of the reference repository is
imported and no pickled callable runs: a stand-in only records the module's attributes
(``_parameters``, ``_buffers``, ``_modules``, plain values).

Why torch's unpickler rather than a hand-written ``pickle.Unpickler.find_class`` override:
``weights_only`` also restricts ``REDUCE``/``BUILD``/``NEWOBJ`` to allow-listed callables,
which ``find_class`` alone does not, and it is maintained with torch's storage format.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch

from ...errors import EdgeYoloError, first_line

# GELAN / YOLOv9 layer classes of WongKinYiu/yolov9 (models/common.py, models/yolo.py). Any
# other name under ``models.`` is refused: it is either another architecture or a payload.
REFERENCE_CLASSES = frozenset(
    {
        "models.yolo.DetectionModel",
        "models.yolo.Detect",
        "models.yolo.DDetect",
        "models.yolo.DualDetect",
        "models.yolo.DualDDetect",
        "models.common.Conv",
        "models.common.AConv",
        "models.common.ADown",
        "models.common.ELAN1",
        "models.common.RepConvN",
        "models.common.RepNBottleneck",
        "models.common.RepNCSP",
        "models.common.RepNCSPELAN4",
        "models.common.SP",
        "models.common.SPPELAN",
        "models.common.Concat",
        "models.common.DFL",
        "models.common.Silence",
        "models.common.CBLinear",
        "models.common.CBFuse",
    }
)
# torch.nn layer classes (Conv2d, BatchNorm2d, SiLU, Sequential, Upsample, ...), also stood in for.
_TORCH_LAYER = re.compile(r"torch\.nn\.modules\.[a-z_]+\.[A-Z]\w*")
# numpy arrays/scalars appear in unstripped training checkpoints (``best_fitness``); they are
# metadata this loader never uses, so they become opaque placeholders, numpy is not called.
_NUMPY_DATA = re.compile(
    r"numpy\.(ndarray|dtype|dtypes\.\w+DType|(_core|core)\.multiarray\.(_reconstruct|scalar))"
)


class PretrainedError(EdgeYoloError, ValueError):
    """A weights file that cannot be imported; the message names the file and the problem."""


class ModuleState:
    """A pickled ``nn.Module`` rebuilt as data only: parameters, buffers, children, attributes."""

    reference_type: ClassVar[str] = "?"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(
                f"{self.reference_type}: expected a module's attribute dict, "
                f"got {type(state).__name__}"
            )
        self.__dict__.update(state)


class OpaqueData:
    """Placeholder for numpy data in checkpoint metadata; keeps nothing, calls nothing."""

    def __init__(self, *args: Any) -> None:
        del args

    def __setstate__(self, state: Any) -> None:
        del state


def is_allowed_global(name: str) -> bool:
    return name in REFERENCE_CLASSES or bool(
        _TORCH_LAYER.fullmatch(name) or _NUMPY_DATA.fullmatch(name)
    )


def _stand_in(name: str) -> type:
    if _NUMPY_DATA.fullmatch(name):
        return OpaqueData
    return type(name.rsplit(".", 1)[1], (ModuleState,), {"reference_type": name})


def read_pickled_checkpoint(path: Path) -> Any:
    """Unpickle a ``torch.save`` file whose globals are all allow-listed; refuse anything else."""
    try:
        named = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (ValueError, RuntimeError, OSError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        raise PretrainedError(f"{path}: not a torch.save checkpoint ({first_line(e)})") from e
    refused = sorted(g for g in named if not is_allowed_global(g))
    if refused:
        raise PretrainedError(
            f"{path}: refused to load: the pickle references {', '.join(refused)}, which "
            "is not a YOLOv9/GELAN layer class or tensor data (nothing from it was executed)"
        )
    stand_ins = [(_stand_in(g), g) for g in named]
    try:
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, TypeError, EOFError) as e:
        raise PretrainedError(f"{path}: refused to load ({first_line(e)})") from e


def reference_type(obj: Any) -> str:
    """The reference class name a stand-in was unpickled as (``models.common.Conv``)."""
    # Read from the class: a crafted state dict could shadow the attribute on the instance.
    return type(obj).reference_type if isinstance(obj, ModuleState) else type(obj).__name__


def children(obj: ModuleState) -> dict[str, Any]:
    return dict(vars(obj).get("_modules") or {})


def iter_tensors(obj: ModuleState, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """``(key, tensor)`` of a stand-in module tree, keyed as ``nn.Module.state_dict`` keys it."""
    attrs = vars(obj)
    non_persistent = attrs.get("_non_persistent_buffers_set") or set()
    for kind in ("_parameters", "_buffers"):
        for name, value in (attrs.get(kind) or {}).items():
            if value is None or (kind == "_buffers" and name in non_persistent):
                continue
            if not isinstance(value, torch.Tensor):
                raise PretrainedError(
                    f"{prefix}{name}: expected a tensor, found {type(value).__name__}"
                )
            yield prefix + name, value.detach()
    for name, child in children(obj).items():
        if child is None:
            continue
        if not isinstance(child, ModuleState):
            raise PretrainedError(
                f"{prefix}{name}: expected a module, found {type(child).__name__}"
            )
        yield from iter_tensors(child, f"{prefix}{name}.")
