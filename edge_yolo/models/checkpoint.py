"""Self-describing checkpoints: the file carries what rebuilds the model.

A checkpoint is a dict of plain types and tensors, loaded with ``torch.load(weights_only=True)``
only, so opening one never executes pickled code. Writes are atomic (temp file + rename):
a process killed mid-save leaves the previous file intact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from ..contract import STRIDES, inference_name
from ..errors import EdgeYoloError, first_line
from ..fileio import atomic_output
from .gelan import YOLO, GELANConfig

FORMAT = "edge-yolo-checkpoint"
#: 2: ``tensors_sha256`` over the weights, checked at load (1: written without it)
FORMAT_VERSION = 2


class CheckpointError(EdgeYoloError, ValueError):
    """A file that is not a usable edge-yolo checkpoint; the message names the file."""


def tensors_sha256(*state_dicts: dict[str, torch.Tensor]) -> str:
    """SHA-256 over tensors' names, dtypes, shapes and bytes, in key order: a flipped byte in a
    checkpoint's weights changes it (torch.load itself checks nothing)."""
    h = hashlib.sha256()
    for sd in state_dicts:
        for name in sorted(sd):
            t = sd[name].detach().cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _checked_tensors(ckpt: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
    """The tensor dicts the checksum covers: the weights, and a training checkpoint's raw
    (non-EMA) weights."""
    out = [ckpt["state_dict"]]
    train = ckpt.get("train")
    if isinstance(train, dict) and isinstance(train.get("model"), dict):
        out.append(train["model"])
    return out


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    with atomic_output(path, "wb") as f:
        torch.save(obj, f)


def checkpoint_dict(
    model: YOLO,
    *,
    names: list[str] | None = None,
    imgsz: int = 640,
    state_dict: dict[str, torch.Tensor] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The self-describing part of a checkpoint (plus any ``extra`` training state)."""
    from .fuse import is_fused

    names = list(names) if names is not None else [f"class{i}" for i in range(model.num_classes)]
    if len(names) != model.num_classes:
        raise ValueError(f"{len(names)} class names for a {model.num_classes}-class model")
    sd = state_dict if state_dict is not None else model.state_dict()
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.name,
        "config": dataclasses.asdict(model.config),
        "num_classes": model.num_classes,
        "names": names,
        "imgsz": int(imgsz),
        "fused": is_fused(model),
        "state_dict": {k: v.detach().cpu() for k, v in sd.items()},
        **extra,
    }
    ckpt["tensors_sha256"] = tensors_sha256(*_checked_tensors(ckpt))
    return ckpt


def without_training_state(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A training checkpoint as it deploys: the EMA weights, names, config, metrics and the
    run's config, without the optimizer, raw weights and RNG state only a resume needs
    (``best.pt``; ``last.pt`` keeps them)."""
    out = {k: v for k, v in ckpt.items() if k != "train"}
    train = ckpt.get("train")
    if isinstance(train, dict) and "epoch" in train:
        out["epoch"] = int(train["epoch"])
    out["tensors_sha256"] = tensors_sha256(*_checked_tensors(out))
    return out


def save_checkpoint(
    path: str | os.PathLike,
    model: YOLO,
    *,
    names: list[str] | None = None,
    imgsz: int = 640,
    **extra: Any,
) -> Path:
    atomic_torch_save(checkpoint_dict(model, names=names, imgsz=imgsz, **extra), path)
    return Path(path)


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: str | None = None,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """Read and validate a checkpoint; refuse other files and mismatched expectations."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and weights_only errors all mean "not ours"
        raise CheckpointError(f"{path}: not a valid edge-yolo checkpoint ({first_line(e)})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an edge-yolo checkpoint (no '{FORMAT}' header); reference YOLOv9 "
            "weights are imported with --weights, see edge_yolo.train.pretrained"
        )
    version = ckpt.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version!r} is newer than this edge-yolo "
            f"reads ({FORMAT_VERSION}); upgrade edge-yolo"
        )
    for key in ("model", "config", "num_classes", "names", "state_dict"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint is missing '{key}'")
    if not isinstance(ckpt["state_dict"], dict) or not all(
        isinstance(v, torch.Tensor) for v in ckpt["state_dict"].values()
    ):
        raise CheckpointError(f"{path}: checkpoint 'state_dict' is not a dict of tensors")
    if version >= 2:
        want = ckpt.get("tensors_sha256")
        if not isinstance(want, str) or tensors_sha256(*_checked_tensors(ckpt)) != want:
            raise CheckpointError(
                f"{path}: the checkpoint's tensors do not match their checksum (the file was "
                "changed or damaged after it was written)"
            )
    if model is not None and inference_name(ckpt["model"]) != inference_name(model):
        raise CheckpointError(
            f"{path}: checkpoint is for model {ckpt['model']!r}, expected {model!r}"
        )
    if num_classes is not None and ckpt["num_classes"] != num_classes:
        raise CheckpointError(
            f"{path}: checkpoint has {ckpt['num_classes']} classes, expected {num_classes}"
        )
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike = "<checkpoint>") -> YOLO:
    cfg = dict(ckpt["config"])
    cfg["strides"] = tuple(cfg.get("strides", STRIDES))
    try:
        config = GELANConfig(**cfg)
    except TypeError as e:
        raise CheckpointError(f"{path}: checkpoint config does not describe a model ({e})") from e
    model = YOLO(config)
    state = ckpt["state_dict"]
    if not config.pgi and any(k.startswith("aux.") for k in state):
        state = {k: v for k, v in state.items() if not k.startswith("aux.")}
    if ckpt.get("fused"):
        model.fuse()
    if ckpt.get("qat") is not None:  # a QAT checkpoint: its fake quantizers go back on first
        from ..quant.qat_state import check_record, restore_quantizers

        if not ckpt.get("fused"):
            raise CheckpointError(f"{path}: a QAT checkpoint must hold a fused model")
        model = restore_quantizers(model, check_record(ckpt["qat"], path)["nncf_config"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[0]})")
        raise CheckpointError(f"{path}: weights do not fit {config.name}: " + "; ".join(parts))
    return model


def load_model(
    path: str | os.PathLike,
    *,
    model: str | None = None,
    num_classes: int | None = None,
    use_ema: bool = True,
) -> tuple[YOLO, dict[str, Any]]:
    """Load a checkpoint and build its model (the EMA weights when the file has them)."""
    ckpt = load_checkpoint(path, model=model, num_classes=num_classes)
    if use_ema and isinstance(ckpt.get("ema"), dict):
        ckpt = {**ckpt, "state_dict": ckpt["ema"]}
    try:
        net = model_from_checkpoint(ckpt, path)
    except RuntimeError as e:  # shape mismatches from load_state_dict
        raise CheckpointError(f"{path}: weights do not fit {ckpt['model']}: {e}") from e
    return net, ckpt
