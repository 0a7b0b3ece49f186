"""Import published YOLOv9-T/S weights into edge-yolo models (``edge-yolo train --weights``)."""

from __future__ import annotations

import dataclasses
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_yolo.models.checkpoint import FORMAT as EDGE_YOLO_FORMAT
from edge_yolo.models.fuse import is_fused
from edge_yolo.models.gelan import YOLO, create_model
from edge_yolo.models.head import DDetect

from .layouts import (
    REFERENCE_GELAN_TYPES,
    REFERENCE_HEAD_INPUTS,
    REFERENCE_YOLOV9_TYPES,
    mit_to_ours,
    reference_to_ours,
)
from .safe_unpickle import (
    ModuleState,
    PretrainedError,
    children,
    iter_tensors,
    read_pickled_checkpoint,
    reference_type,
)

REFERENCE = "yolov9-reference"  # WongKinYiu/yolov9 pickled checkpoint
MIT = "yolo-mit"  # MultimediaTechLab/YOLO state_dict
EDGE_YOLO = "edge-yolo"  # our own checkpoint, e.g. fine-tuning to another class set
_SIZES = {16: "t", 32: "s"}  # stem width -> variant letter
# Keys every supported checkpoint has once mapped; their absence means another architecture.
_REQUIRED = (
    "backbone.stem.conv.weight",
    "backbone.elan1.cv4.conv.weight",
    "backbone.down2.conv.conv.weight",
    "backbone.stage3.cv2.0.m.0.cv1.conv1.conv.weight",
    "neck.spp.cv5.conv.weight",
    "head.box.0.0.conv.weight",
    "head.cls.0.0.conv.weight",
    "head.cls.0.2.weight",
)
_BOTTLENECK = re.compile(r"backbone\.stage3\.cv2\.0\.m\.(\d+)\.")


@dataclass
class PretrainedWeights:
    """A weights file read and renamed to edge-yolo keys, with what it says about its model."""

    path: Path
    source_format: str
    state: dict[str, torch.Tensor]
    unmapped: dict[str, str]  # source key -> why it has no place in our model
    num_classes: int
    width: int
    depth: int
    has_aux: bool
    head_widths: tuple[int, int]  # (box, cls) branch widths of the main head
    aux_head_widths: tuple[int, int] | None

    @property
    def model_name(self) -> str:
        size = _SIZES.get(self.width, f"w{self.width}")
        return f"{'yolov9' if self.has_aux else 'gelan'}-{size}"


@dataclass
class LoadSummary:
    """What ``load_pretrained`` did, key by key; ``str()`` gives a few readable lines."""

    path: str
    source_format: str
    source_model: str
    source_num_classes: int
    head_widths: tuple[int, int]
    loaded: list[str] = field(default_factory=list)
    reinitialised: dict[str, str] = field(default_factory=dict)  # model key -> reason
    skipped: dict[str, str] = field(default_factory=dict)  # checkpoint key -> reason
    missing: dict[str, str] = field(default_factory=dict)  # model key left as initialised
    refitted_heads: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        box, cls = self.head_widths
        lines = [
            f"pretrained {Path(self.path).name}: {self.source_format} {self.source_model}, "
            f"{self.source_num_classes} classes, head widths box {box} / cls {cls}",
            f"  loaded {len(self.loaded)} tensors",
        ]
        lines += [f"  refitted {h}" for h in self.refitted_heads]
        for label, items in (
            ("re-initialised", self.reinitialised),
            ("skipped", self.skipped),
            ("not in checkpoint", self.missing),
        ):
            for reason, n in Counter(items.values()).most_common():
                lines.append(f"  {label} {n}: {reason}")
        return "\n".join(lines)


def read_pretrained(path: str | os.PathLike) -> PretrainedWeights:
    """Read a reference (WongKinYiu/yolov9), MIT (MultimediaTechLab/YOLO) or edge-yolo file."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedError(f"{path}: no such weights file")
    obj = read_pickled_checkpoint(path)
    if isinstance(obj, dict) and obj.get("format") == EDGE_YOLO_FORMAT:
        if obj.get("fused"):
            raise PretrainedError(f"{path}: fused checkpoint; use the unfused one to fine-tune")
        fmt, state, unmapped = EDGE_YOLO, dict(obj["state_dict"]), {}
    elif isinstance(obj, ModuleState) or (
        isinstance(obj, dict) and isinstance(obj.get("ema") or obj.get("model"), ModuleState)
    ):
        fmt = REFERENCE
        state, unmapped = _from_reference(path, obj)
    else:
        fmt = MIT
        state, unmapped = _from_mit(path, _mit_state_dict(path, obj))
    return _describe(path, fmt, state, unmapped)


def _from_reference(path: Path, obj: Any) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    # The EMA weights are the ones the reference evaluates and ships (attempt_load does the same).
    root = obj if isinstance(obj, ModuleState) else obj.get("ema") or obj.get("model")
    seq = children(root).get("model")
    if not isinstance(seq, ModuleState):
        raise PretrainedError(f"{path}: reference checkpoint without a layer list (model.model)")
    if not all(k.isdigit() for k in children(seq)):
        raise PretrainedError(f"{path}: reference layer list with non-numeric names")
    layers = [children(seq)[k] for k in sorted(children(seq), key=int)]
    types = [reference_type(m).rsplit(".", 1)[-1] for m in layers]
    expected = REFERENCE_YOLOV9_TYPES if types[-1:] == ["DualDDetect"] else REFERENCE_GELAN_TYPES
    for i, (got, want) in enumerate(zip(types, expected)):
        if got != want:
            raise PretrainedError(
                f"{path}: layer {i} is {got} where GELAN-t/s has {want}: only gelan-t/s and "
                "yolov9-t/s reference checkpoints are supported"
            )
    if len(types) != len(expected):
        raise PretrainedError(
            f"{path}: {len(types)} layers, GELAN-t/s has {len(expected)}: only gelan-t/s and "
            "yolov9-t/s reference checkpoints are supported"
        )
    head_from = list(vars(layers[-1]).get("f", []))
    if head_from != REFERENCE_HEAD_INPUTS[types[-1]]:
        raise PretrainedError(f"{path}: head reads layers {head_from}, not a GELAN-t/s layout")
    if "bn" not in children(layers[0]):
        raise PretrainedError(f"{path}: fused checkpoint (no BatchNorm); use the unfused one")
    dual = types[-1] == "DualDDetect"
    return _rename(dict(iter_tensors(root)), lambda k: reference_to_ours(k, dual_head=dual))


def _mit_state_dict(path: Path, obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("model_state_dict"), dict):
        obj = obj["model_state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        # Lightning checkpoint of the MIT trainer: YOLO.model is the ModuleList.
        prefix = "model.model."
        obj = {k[len(prefix) :]: v for k, v in obj["state_dict"].items() if k.startswith(prefix)}
    if not isinstance(obj, dict) or not obj or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise PretrainedError(
            f"{path}: not a recognised weights file (expected a WongKinYiu/yolov9 checkpoint, "
            "a MultimediaTechLab/YOLO state_dict or an edge-yolo checkpoint)"
        )
    if not any(".bn." in k for k in obj):
        raise PretrainedError(f"{path}: no BatchNorm tensors (fused or not a YOLOv9 state_dict)")
    return obj


def _from_mit(
    path: Path, sd: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    # ELAN's conv2 is a plain Conv (RepNCSPELAN's is a Sequential); AConv has one conv.
    if "2.conv2.conv.weight" not in sd or "3.conv.conv.weight" not in sd:
        raise PretrainedError(
            f"{path}: layers 2-3 are not ELAN + AConv: only v9-t / v9-s MIT weights are supported"
        )
    return _rename(sd, mit_to_ours)


def _rename(
    sd: dict[str, torch.Tensor], rename: Callable[[str], tuple[str | None, str]]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    state: dict[str, torch.Tensor] = {}
    unmapped: dict[str, str] = {}
    for key, tensor in sd.items():
        ours, why = rename(key)
        if ours is None:
            unmapped[key] = why
        else:
            state[ours] = tensor
    return state, unmapped


def _describe(
    path: Path, fmt: str, state: dict[str, torch.Tensor], unmapped: dict[str, str]
) -> PretrainedWeights:
    absent = [k for k in _REQUIRED if k not in state]
    if absent:
        raise PretrainedError(
            f"{path}: not a GELAN-t/s or YOLOv9-t/s {fmt} checkpoint (nothing maps to {absent[0]})"
        )
    depth = len({m[1] for k in state if (m := _BOTTLENECK.match(k))})
    has_aux = any(k.startswith("aux.") for k in state)
    aux_head = "aux.head.cls.0.0.conv.weight"
    return PretrainedWeights(
        path=path,
        source_format=fmt,
        state=state,
        unmapped=unmapped,
        num_classes=int(state["head.cls.0.2.weight"].shape[0]),
        width=int(state["backbone.stem.conv.weight"].shape[0]),
        depth=depth,
        has_aux=has_aux,
        head_widths=_widths(state, "head"),
        aux_head_widths=_widths(state, "aux.head") if aux_head in state else None,
    )


def _widths(state: dict[str, torch.Tensor], head: str) -> tuple[int, int]:
    box = state[f"{head}.box.0.0.conv.weight"].shape[0]
    cls = state[f"{head}.cls.0.0.conv.weight"].shape[0]
    return int(box), int(cls)


def _heads(model: YOLO) -> dict[str, DDetect]:
    heads = {"head": model.head}
    if model.aux is not None:
        heads["aux.head"] = model.aux.head
    return heads


def _det_widths(det: DDetect) -> tuple[int, int]:
    return det.box[0][0].conv.out_channels, det.cls[0][0].conv.out_channels


def fit_heads(
    model: YOLO, head_widths: tuple[int, int], aux_head_widths: tuple[int, int] | None = None
) -> list[str]:
    """Rebuild the heads whose (box, cls) branch widths differ; record them in ``model.config``."""
    wanted = {"head": tuple(head_widths), "aux.head": tuple(aux_head_widths or head_widths)}
    changes = []
    for name, det in _heads(model).items():
        old = _det_widths(det)
        new_widths = wanted[name]
        if old == new_widths:
            continue
        ref = det.box[0][-1].weight
        new = DDetect(
            det.num_classes,
            tuple(seq[0].conv.in_channels for seq in det.box),
            det.strides,
            det.reg_max,
            widths=(new_widths[0], new_widths[1]),
        ).to(ref.device, ref.dtype)
        new.train(det.training)
        owner = model if name == "head" else model.aux
        owner.head = new
        changes.append(f"{name}: widths (box, cls) {old} -> {new_widths}")
    if changes:
        box, cls = wanted["head"]
        model.config = dataclasses.replace(model.config, head_widths=(box, cls))
    return changes


def _class_output_keys(model: YOLO) -> dict[str, nn.Conv2d]:
    """Keys of the last 1x1 conv of every class branch (main and auxiliary)."""
    out: dict[str, nn.Conv2d] = {}
    for name, det in _heads(model).items():
        for level, seq in enumerate(det.cls):
            prefix = f"{name}.cls.{level}.{len(seq) - 1}"
            out[f"{prefix}.weight"] = out[f"{prefix}.bias"] = seq[-1]
    return out


def apply_pretrained(
    model: YOLO,
    weights: PretrainedWeights,
    *,
    strict_classes: bool = False,
    fit_head_widths: bool = True,
) -> LoadSummary:
    """Load already-read weights into ``model`` (see :func:`load_pretrained`)."""
    path = weights.path
    if is_fused(model):
        raise PretrainedError(f"{path}: load pretrained weights before fusing the model")
    cfg = model.config
    if (weights.width, weights.depth) != (cfg.width, cfg.depth):
        raise PretrainedError(
            f"{path}: weights are {weights.model_name} (width {weights.width}, depth "
            f"{weights.depth}); the model is {model.name} (width {cfg.width}, depth {cfg.depth})"
        )
    class_change = weights.num_classes != model.num_classes
    if class_change and strict_classes:
        raise PretrainedError(
            f"{path}: checkpoint has {weights.num_classes} classes, the model {model.num_classes}"
        )
    summary = LoadSummary(
        path=str(path),
        source_format=weights.source_format,
        source_model=weights.model_name,
        source_num_classes=weights.num_classes,
        head_widths=weights.head_widths,
    )
    if fit_head_widths:
        summary.refitted_heads = fit_heads(model, weights.head_widths, weights.aux_head_widths)

    reinit = _class_output_keys(model) if class_change else {}
    for conv in set(reinit.values()):
        conv.reset_parameters()
    if reinit:
        for det in _heads(model).values():
            # Box biases reset here are overwritten below by the checkpoint's.
            det.reset_bias()

    target = model.state_dict()
    to_load: dict[str, torch.Tensor] = {}
    for key, current in target.items():
        if key in reinit:
            reason = f"class count {weights.num_classes} -> {model.num_classes}"
            summary.reinitialised[key] = reason
        elif key not in weights.state:
            summary.missing[key] = (
                "auxiliary branch, trained from scratch" if key.startswith("aux.") else "absent"
            )
        elif weights.state[key].shape != current.shape:
            shapes = f"checkpoint {tuple(weights.state[key].shape)}, model {tuple(current.shape)}"
            summary.skipped[key] = f"shape mismatch ({shapes})"
        else:
            src = weights.state[key]
            to_load[key] = src.to(current.dtype) if src.is_floating_point() else src
    for key in weights.state.keys() - target.keys():
        summary.skipped[key] = (
            "auxiliary branch, the model has none" if key.startswith("aux.") else "not in model"
        )
    summary.skipped.update(weights.unmapped)
    model.load_state_dict(to_load, strict=False)
    summary.loaded = sorted(to_load)
    return summary


def load_pretrained(
    model: YOLO,
    path: str | os.PathLike,
    *,
    strict_classes: bool = False,
    fit_head_widths: bool = True,
) -> LoadSummary:
    """Initialise ``model`` in place from published YOLOv9-T/S weights (or an edge-yolo checkpoint).

    Accepts WongKinYiu/yolov9 checkpoints (``gelan-t.pt``, ``yolov9-s.pt``,
    ``yolov9-t-converted.pt``; read without running pickled code) and MultimediaTechLab/YOLO
    state_dicts (``v9-t.pt``, ``v9-s.pt``). Heads are rebuilt to the checkpoint's branch widths
    (``fit_head_widths``; do it before building the optimizer). When the class count differs,
    the class-output convs are re-initialised, unless ``strict_classes`` makes it an error.
    The auxiliary branch is loaded into yolov9-* models and skipped for gelan-* ones.
    """
    return apply_pretrained(
        model,
        read_pretrained(path),
        strict_classes=strict_classes,
        fit_head_widths=fit_head_widths,
    )


def create_model_for_weights(
    name: str | None,
    path: str | os.PathLike,
    num_classes: int | None = None,
    *,
    strict_classes: bool = False,
) -> tuple[YOLO, LoadSummary]:
    """Build ``name`` with heads sized to the weights at ``path`` and load them.

    ``name=None`` takes the checkpoint's own variant (``yolov9-t`` when it carries the
    auxiliary branch, else ``gelan-t``); ``num_classes=None`` its class count.
    """
    weights = read_pretrained(path)
    model = create_model(name or weights.model_name, num_classes or weights.num_classes)
    return model, apply_pretrained(model, weights, strict_classes=strict_classes)
