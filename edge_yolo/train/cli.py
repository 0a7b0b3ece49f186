"""``edge-yolo train``: train or fine-tune a model from a recipe, flags overriding it.

Single process: ``edge-yolo train --model yolov9-t --data data.yaml --epochs 100``.
Several processes / GPUs: ``torchrun --nproc_per_node=N -m edge_yolo train ...`` (``--batch``
is the global batch, split over the processes). Resume a stopped run with ``--resume RUN_DIR``
(or ``--resume RUN_DIR/last.pt``): the run's own config is used, except for the few flags
listed under "resume".
"""

from __future__ import annotations

import argparse

from ..cli_args import (
    existing_path,
    image_size,
    non_negative_int,
    output_dir,
    positive_float,
    positive_int,
)
from .config import OPTIMIZERS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (__doc__ or "").split("\n\n")[0]
    g = p.add_argument_group("run")
    g.add_argument("--recipe", type=existing_path,
                   help="recipe YAML (recipes/*.yaml); flags override it")
    g.add_argument("--model", help="yolov9-t, yolov9-s (with PGI), gelan-t, gelan-s")
    g.add_argument("--data", help="data YAML, COCO JSON, VOC folder, 'synthetic' or 'synthetic:N'")
    g.add_argument(
        "--val-data", dest="val_data", help="validation set (default: val split of --data)"
    )
    g.add_argument(
        "--weights", help="initial weights: edge-yolo checkpoint or reference YOLOv9 .pt"
    )
    g.add_argument("--out", type=output_dir, help="run directory (default runs/train)")
    g.add_argument("--exist-ok", action="store_true", help="allow --out to hold an earlier run")
    g.add_argument("--resume", metavar="RUN", type=existing_path,
                   help="continue a run: its directory or its last.pt")
    h = p.add_argument_group("schedule")
    h.add_argument("--epochs", type=positive_int)
    h.add_argument("--imgsz", type=image_size, help="square training/validation size in pixels")
    h.add_argument("--batch", type=positive_int, help="global batch (summed over processes)")
    h.add_argument("--nbs", type=positive_int, help="nominal batch for gradient accumulation (64)")
    h.add_argument("--lr0", "--lr", dest="lr0", type=positive_float, help="initial learning rate")
    h.add_argument("--lrf", type=positive_float)
    h.add_argument("--optimizer", choices=OPTIMIZERS,
                   help="SGD (reference schedule) or AdamW (few updates: small data, short runs)")
    h.add_argument("--cos-lr", dest="cos_lr", action="store_true", default=None)
    h.add_argument("--warmup-epochs", dest="warmup_epochs", type=float)
    h.add_argument("--close-mosaic", dest="close_mosaic", type=non_negative_int)
    h.add_argument("--eval-interval", dest="eval_interval", type=non_negative_int,
                   help="0: never evaluate")
    r = p.add_argument_group("runtime")
    r.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    r.add_argument("--workers", type=non_negative_int,
                   help="data-loading processes per training process (default: 0 on a CPU of "
                        "2 cores, more on larger machines and for GPUs)")
    r.add_argument("--seed", type=non_negative_int)
    r.add_argument("--threads", type=positive_int, help="torch CPU threads per process")
    r.add_argument("--sync-bn", dest="sync_bn", action="store_true", default=None)
    r.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (default: float16 on CUDA; float32 on a CPU, where "
                        "--amp gives bfloat16: 1.35x faster with AMX, less accurate)")
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
    from edge_yolo.errors import UsageError
    from edge_yolo.models import list_models

    from .config import plan_run
    from .loop import train

    if args.model is not None and args.model not in list_models():
        raise UsageError(
            f"--model {args.model}: unknown model; registered: {', '.join(list_models())}"
        )
    overrides = {k: getattr(args, k) for k in OVERRIDE_KEYS}
    cfg, resume = plan_run(args.recipe, overrides, args.resume, args.exist_ok)
    result = train(cfg, resume=resume)
    if result.final is not None:
        final = result.final
        print(f"best: {result.best}  mAP50-95 {final['map50_95']:.4f}  mAP50 {final['map50']:.4f}")
    return 0
