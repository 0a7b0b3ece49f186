"""Training recipes: one typed dataclass, filled from YAML, refusing keys it does not know.

The dataclass defaults *are* the documented base: the reference YOLOv9 COCO schedule
(docs/MODEL_FACTS.md, "Reference training recipe"). A recipe file states only what differs
from it (YOLOX-style), except ``recipes/coco-yolov9-s.yaml``, which spells the reference out
in full and is checked against these defaults by the tests. Command-line flags override
recipe values, which override the defaults.

Augmentation hyper-parameters live under ``augment:`` and are checked by the data loader's
own dataclass, so a misspelt augmentation key is refused here too.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import EdgeYoloError, option, refuse_unknown_keys


class RecipeError(EdgeYoloError, ValueError):
    """A recipe file or value that cannot be used; the message names the file and the key."""


OPTIMIZERS = ("SGD", "AdamW")


@dataclass
class TrainConfig:
    """Everything that defines a training run (model, data, schedule, optimizer, runtime)."""

    # what to train, on what
    model: str = "yolov9-t"
    data: str = "synthetic"
    val_data: str | None = None  # default: the "val" split of ``data``
    weights: str | None = None  # initial weights: an edge-yolo checkpoint or reference YOLOv9
    num_classes: int | None = None  # default: the number of class names in the dataset

    # schedule
    epochs: int = 500
    max_updates: int | None = None  # stop after this many optimizer updates (QAT's schedule)
    imgsz: int = 640
    batch: int = 64  # global batch per optimizer micro-step (summed over processes)
    nbs: int = 64  # nominal batch: gradients are accumulated up to this many images
    lr0: float = 0.01
    lrf: float = 0.01  # final LR = lr0 * lrf
    cos_lr: bool = False
    optimizer: str = "SGD"  # "SGD" (nesterov) or "AdamW" (momentum is its beta1)
    momentum: float = 0.937
    weight_decay: float = 5e-4  # at the nominal batch; scaled by batch * accumulate / nbs
    warmup_epochs: float = 3.0
    warmup_min_iters: int = 100  # warmup lasts max(warmup_epochs * iters/epoch, this)
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    clip_grad: float = 10.0  # max gradient norm; 0 disables clipping
    ema_decay: float = 0.9999
    ema_tau: float = 2000.0  # EMA ramp: decay * (1 - exp(-updates / tau))
    close_mosaic: int = 15  # turn mosaic off for the last N epochs
    label_smoothing: float = 0.0

    # loss gains (reference: box 7.5, cls 0.5, dfl 1.5; PGI auxiliary head x 0.25)
    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5
    aux_weight: float = 0.25

    augment: dict[str, Any] = field(default_factory=dict)  # data-loader hyper-parameters

    # evaluation
    eval_interval: int = 1  # evaluate every N epochs and after the last; 0: never
    eval_batch: int | None = None  # default: 2 * batch per process
    eval_max_images: int | None = None  # evaluate on the first N validation images only

    # runtime
    out: str = "runs/train"
    device: str | None = None  # "cpu", "cuda", "cuda:1"; default: cuda when available
    workers: int | None = None  # loader processes per training process; None: for the machine
    seed: int = 0
    deterministic: bool = True
    amp: bool | None = None  # default: on for CUDA, off on CPU (see loop.py)
    sync_bn: bool = False
    threads: int | None = None  # torch intra-op threads per process (CPU)
    plots: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.max_updates is None or self.max_updates >= 1, "max_updates must be >= 1"),
            (self.imgsz >= 32 and self.imgsz % 32 == 0, "imgsz must be a multiple of 32 (>= 32)"),
            (self.batch >= 1, "batch must be >= 1"),
            (self.nbs >= 1, "nbs must be >= 1"),
            (self.lr0 > 0, "lr0 must be > 0"),
            (0 < self.lrf <= 1, "lrf must be in (0, 1]"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.warmup_epochs >= 0 and self.warmup_min_iters >= 0, "warmup must be >= 0"),
            (self.clip_grad >= 0, "clip_grad must be >= 0"),
            (0 <= self.ema_decay < 1 and self.ema_tau > 0, "ema_decay in [0, 1), ema_tau > 0"),
            (self.close_mosaic >= 0, "close_mosaic must be >= 0"),
            (self.eval_interval >= 0, "eval_interval must be >= 0"),
            (self.workers is None or self.workers >= 0, "workers must be >= 0"),
            (self.num_classes is None or self.num_classes >= 1, "num_classes must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise RecipeError(message)
        if not isinstance(self.augment, dict):
            raise RecipeError("augment must be a mapping of augmentation hyper-parameters")

    def to_dict(self) -> dict[str, Any]:
        """Plain types only: stored in checkpoints (``torch.load(weights_only=True)``)."""
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _check_type(name: str, value: Any, source: str) -> Any:
    """Coerce YAML scalars to the field's type; refuse what does not fit."""
    annotation = str(FIELDS[name].type)
    if value is None:
        if "None" in annotation:
            return None
        raise RecipeError(f"{source}: '{name}' may not be empty")
    kinds = {"bool": bool, "int": int, "float": float, "str": str, "dict": dict}
    base = annotation.replace(" | None", "").split("[")[0]
    kind = kinds.get(base)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):
        # YAML 1.1 reads "1e-3" (no dot) as a string; it is meant as a number
        try:
            return float(value)
        except ValueError:
            pass
    if kind is int and isinstance(value, bool) or kind is not None and not isinstance(value, kind):
        raise RecipeError(
            f"{source}: '{name}' must be {base}, got {type(value).__name__} {value!r}"
        )
    return value


def config_from_dict(values: dict[str, Any], source: str = "<dict>") -> TrainConfig:
    """Build a config from a mapping, refusing unknown keys and values of the wrong type."""
    refuse_unknown_keys(values, FIELDS, source, RecipeError)
    checked = {k: _check_type(k, v, source) for k, v in values.items()}
    try:
        return TrainConfig(**checked)
    except RecipeError as e:
        raise RecipeError(f"{source}: {e}") from None


def read_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """The raw key/value mapping of a recipe file (checked by :func:`config_from_dict`)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys to values")
    return values


def load_recipe(
    path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Defaults, then the recipe file, then ``overrides`` (command-line flags; None = unset)."""
    values = read_recipe(path) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    cfg = config_from_dict(values, source)
    set_values = {k: v for k, v in (overrides or {}).items() if v is not None}
    if set_values:
        merged = {**cfg.to_dict(), **set_values}
        cfg = config_from_dict(merged, f"{source} + command line")
    check_augment(cfg.augment, source)
    return cfg


def augment_config(augment: dict[str, Any], source: str = "<config>") -> Any:
    """The data loader's :class:`~edge_yolo.data.augment.AugmentConfig` for ``augment``."""
    from edge_yolo.data.augment import AugmentConfig

    try:
        return AugmentConfig.from_dict(augment, where=f"{source}: augment")
    except (TypeError, ValueError) as e:
        raise RecipeError(f"{source}: augment: {e}" if source not in str(e) else str(e)) from None


def check_augment(augment: dict[str, Any], source: str) -> None:
    """Refuse bad augmentation keys/values in a recipe.

    ``close_mosaic`` is a schedule setting and lives at the top level of a recipe only, so
    one run has one value for it (the loop hands it to the loader).
    """
    if "close_mosaic" in augment:
        raise RecipeError(f"{source}: set 'close_mosaic' at the top level, not under 'augment'")
    augment_config(augment, source)


# Settings that may differ on a resume: they change where/how fast, not what is computed
# (``epochs`` may extend a finished schedule; the LR schedule is then the longer one).
RESUME_OVERRIDES = ("epochs", "workers", "device", "threads", "progress", "plots")


def plan_run(
    recipe: str | os.PathLike | None,
    overrides: dict[str, Any],
    resume: str | os.PathLike | None = None,
    exist_ok: bool = False,
) -> tuple[TrainConfig, Any]:
    """The config of a run and, for a resume, its :class:`~edge_yolo.train.state.ResumePoint`
    (else None): a new run is the recipe with ``overrides`` (None values ignored) on top; a
    resumed run keeps its own config except :data:`RESUME_OVERRIDES`. Shared by ``edge-yolo
    train`` and :func:`edge_yolo.train`."""
    from .state import load_resume_point

    given = {k: v for k, v in overrides.items() if v is not None}
    if "out" in given:
        given["out"] = str(given["out"])
    if resume is not None:
        point = load_resume_point(resume)
        fixed = sorted(k for k in given if k not in RESUME_OVERRIDES)
        if fixed or recipe:
            names = ", ".join(option(k) for k in fixed) or option("recipe")
            allowed = ", ".join(option(k) for k in RESUME_OVERRIDES)
            raise RecipeError(f"{names} cannot change on {option('resume')} (the run keeps its "
                              f"config; only {allowed} may)")
        values = {**point.config, **given, "out": str(point.path.parent)}
        return config_from_dict(values, f"{point.path} (resumed config)"), point
    cfg = load_recipe(recipe, given)
    out = Path(cfg.out)
    if (out / "last.pt").exists() and not exist_ok:
        raise RecipeError(
            f"{out} already holds a run (last.pt); continue it with {option('resume', str(out))}"
            f", or pass {option('exist_ok', True, flag='--exist-ok')} / another {option('out')}"
        )
    if out.exists() and not out.is_dir():
        raise RecipeError(f"{out} is a file, not a run directory")
    return cfg, None
