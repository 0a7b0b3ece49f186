"""``edge-yolo train``: train or fine-tune a model from a recipe, flags overriding it.

Single process: ``edge-yolo train --model yolov9-t --data data.yaml --epochs 100``.
Several processes / GPUs: ``torchrun --nproc_per_node=N -m edge_yolo train ...`` (``--batch``
is the global batch, split over the processes). Resume a stopped run with ``--resume RUN_DIR``
(or ``--resume RUN_DIR/last.pt``): the run's own config is used, except for the few flags
listed under "resume".
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Flags that may differ on --resume: they change where/how fast, not what is computed
# (``epochs`` may extend a finished schedule; the LR schedule is then the longer one).
RESUME_OVERRIDES = ("epochs", "workers", "device", "threads", "progress", "plots")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (__doc__ or "").split("\n\n")[0]
    g = p.add_argument_group("run")
    g.add_argument("--recipe", type=Path, help="recipe YAML (recipes/*.yaml); flags override it")
    g.add_argument("--model", help="yolov9-t, yolov9-s (PGI), gelan-t, gelan-s")
    g.add_argument("--data", help="data YAML, COCO JSON, VOC folder, 'synthetic' or 'synthetic:N'")
    g.add_argument(
        "--val-data", dest="val_data", help="validation set (default: val split of --data)"
    )
    g.add_argument(
        "--weights", help="initial weights: edge-yolo checkpoint or reference YOLOv9 .pt"
    )
    g.add_argument("--out", help="run directory (default runs/train)")
    g.add_argument("--exist-ok", action="store_true", help="allow --out to hold an earlier run")
    g.add_argument("--resume", metavar="RUN", help="continue a run: its directory or its last.pt")
    h = p.add_argument_group("schedule")
    h.add_argument("--epochs", type=int)
    h.add_argument("--imgsz", type=int, help="square training/validation size in pixels")
    h.add_argument("--batch", type=int, help="global batch (summed over processes)")
    h.add_argument("--nbs", type=int, help="nominal batch for gradient accumulation (64)")
    h.add_argument("--lr0", type=float)
    h.add_argument("--lrf", type=float)
    h.add_argument("--cos-lr", dest="cos_lr", action="store_true", default=None)
    h.add_argument("--warmup-epochs", dest="warmup_epochs", type=float)
    h.add_argument("--close-mosaic", dest="close_mosaic", type=int)
    h.add_argument("--eval-interval", dest="eval_interval", type=int, help="0: never evaluate")
    r = p.add_argument_group("runtime")
    r.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    r.add_argument("--workers", type=int, help="data-loading processes per training process")
    r.add_argument("--seed", type=int)
    r.add_argument("--threads", type=int, help="torch CPU threads per process")
    r.add_argument("--sync-bn", dest="sync_bn", action="store_true", default=None)
    r.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None)
    r.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    r.add_argument("--no-plots", dest="plots", action="store_false", default=None)


OVERRIDE_KEYS = (
    "model",
    "data",
    "val_data",
    "weights",
    "out",
    "epochs",
    "imgsz",
    "batch",
    "nbs",
    "lr0",
    "lrf",
    "cos_lr",
    "warmup_epochs",
    "close_mosaic",
    "eval_interval",
    "device",
    "workers",
    "seed",
    "threads",
    "sync_bn",
    "amp",
    "progress",
    "plots",
)


def run(args: argparse.Namespace) -> int:
    import sys

    from edge_yolo.data.report import DatasetError
    from edge_yolo.models.checkpoint import CheckpointError

    from .config import RecipeError, config_from_dict, load_recipe
    from .distributed import DeviceError
    from .loop import TrainError, train
    from .pretrained import PretrainedError
    from .state import load_resume_point

    overrides = {k: getattr(args, k) for k in OVERRIDE_KEYS}
    try:
        resume = None
        if args.resume:
            resume = load_resume_point(args.resume)
            fixed = sorted(
                k for k, v in overrides.items() if v is not None and k not in RESUME_OVERRIDES
            )
            if fixed or args.recipe:
                names = ", ".join(f"--{k.replace('_', '-')}" for k in fixed) or "--recipe"
                print(
                    f"edge-yolo train: {names} cannot change on --resume (the run keeps its "
                    f"config; only {', '.join('--' + k for k in RESUME_OVERRIDES)} may)",
                    file=sys.stderr,
                )
                return 2
            values = {**resume.config, **{k: v for k, v in overrides.items() if v is not None}}
            values["out"] = str(resume.path.parent)
            cfg = config_from_dict(values, f"{resume.path} (resumed config)")
        else:
            cfg = load_recipe(args.recipe, overrides)
            out = Path(cfg.out)
            if (out / "last.pt").exists() and not args.exist_ok:
                print(
                    f"edge-yolo train: {out} already holds a run (last.pt); continue it with "
                    f"--resume {out}, or pass --exist-ok / another --out",
                    file=sys.stderr,
                )
                return 2
        result = train(cfg, resume=resume)
    except (
        RecipeError,
        DatasetError,
        CheckpointError,
        PretrainedError,
        TrainError,
        DeviceError,
    ) as e:
        print(f"edge-yolo train: {e}", file=sys.stderr)
        return 1
    if result.final is not None:
        final = result.final
        print(f"best: {result.best}  mAP50-95 {final['map50_95']:.4f}  mAP50 {final['map50']:.4f}")
    return 0
