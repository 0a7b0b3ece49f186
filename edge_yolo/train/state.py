"""Training checkpoints: ``last.pt`` / ``best.pt`` that a run resumes from exactly.

On top of the self-describing model checkpoint (:mod:`edge_yolo.models.checkpoint`), whose
``state_dict`` holds the **EMA** weights (what is evaluated and deployed), the training
state is stored under ``"train"``: the raw model weights, optimizer, LR scheduler, AMP
scaler, EMA update count, epoch, best fitness, the run's resolved config and the RNG states
of torch, numpy and python. The data order and augmentation of an epoch are seeded from
(seed, epoch), so the sampler position needs no more than the epoch. Everything is plain
types and tensors, so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_yolo.errors import option
from edge_yolo.models.checkpoint import (
    CheckpointError,
    atomic_torch_save,
    checkpoint_dict,
    load_checkpoint,
)
from edge_yolo.models.gelan import YOLO

TRAIN_STATE_VERSION = 1


def rng_state() -> dict[str, Any]:
    """torch, numpy and python RNG states as tensors and lists (weights_only-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed torch, numpy and python; ask torch for deterministic kernels where it has them."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # warn_only: a few CUDA kernels (e.g. upsample backward) have no deterministic
        # version; training must still run, just not bit-reproducibly on GPU.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def save_training_checkpoint(
    path: str | os.PathLike,
    *,
    ema_model: YOLO,
    model_state: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    ema_updates: int,
    epoch: int,
    best_fitness: float | None,
    metrics: dict[str, Any],
    config: dict[str, Any],
    names: list[str],
    imgsz: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a checkpoint atomically and return it; ``epoch`` is the number of epochs
    completed. ``extra`` entries are stored beside the weights (a QAT run's quantizer setup)."""
    train = {
        "version": TRAIN_STATE_VERSION,
        "model": {k: v.detach().cpu() for k, v in model_state.items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "ema_updates": int(ema_updates),
        "epoch": int(epoch),
        "best_fitness": None if best_fitness is None else float(best_fitness),
        "rng": rng_state(),
    }
    ckpt = checkpoint_dict(
        ema_model, names=names, imgsz=imgsz, train=train, metrics=metrics, train_config=config,
        **(extra or {}),
    )
    atomic_torch_save(ckpt, path)
    return ckpt


@dataclass
class ResumePoint:
    """What a resumed run restores, read from a training checkpoint."""

    path: Path
    checkpoint: dict[str, Any]

    @property
    def train(self) -> dict[str, Any]:
        return self.checkpoint["train"]

    @property
    def config(self) -> dict[str, Any]:
        return self.checkpoint["train_config"]

    @property
    def epoch(self) -> int:
        return int(self.train["epoch"])


def find_resume_checkpoint(path: str | os.PathLike) -> Path:
    """``--resume`` accepts a run directory (uses its ``last.pt``) or a checkpoint file."""
    p = Path(path)
    if p.is_dir():
        p = p / "last.pt"
    if not p.is_file():
        raise CheckpointError(f"{p}: nothing to resume (no such checkpoint)")
    return p


def load_resume_point(path: str | os.PathLike) -> ResumePoint:
    """Read a training checkpoint and check it carries the state a resume needs."""
    p = find_resume_checkpoint(path)
    ckpt = load_checkpoint(p)
    train = ckpt.get("train")
    if not isinstance(train, dict) or "optimizer" not in train or "train_config" not in ckpt:
        raise CheckpointError(
            f"{p}: has model weights but no training state, so it cannot be resumed"
            + (" (best.pt holds the deployable weights only: resume from last.pt or the run "
               "directory)" if p.name == "best.pt" else "")
            + f"; start a new run with {option('weights', str(p))} instead"
        )
    if train.get("version", 0) > TRAIN_STATE_VERSION:
        raise CheckpointError(
            f"{p}: training state version {train['version']} is newer than this edge-yolo"
        )
    return ResumePoint(p, ckpt)
