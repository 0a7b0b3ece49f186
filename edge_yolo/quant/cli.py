"""``edge-yolo qat``: quantization-aware fine-tuning of a trained checkpoint for one target.

Example: ``edge-yolo qat --weights runs/train/best.pt --data data.yaml --target jetson``, then
``edge-yolo export --weights runs/qat/best.pt --target jetson --precision int8``. ``--data``
may also be a folder of unlabeled images or a video from the camera the model will run on
(frames sampled): the model then learns from the float model's outputs alone (distillation).
The schedule is counted in optimizer updates (``--updates``); the run scores its start and
its end on images held out of its data. A run killed at any point continues with
``edge-yolo qat --resume runs/qat`` (``--updates`` may extend it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli_args import (
    existing_path,
    image_size,
    non_negative_int,
    output_dir,
    positive_float,
    positive_int,
)

# flags that may differ on --resume (where and how fast; ``epochs`` may extend a finished run)
RESUME_OVERRIDES = ("updates", "workers", "device", "threads", "progress")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .qat import VARIANTS
    from .qat_run import DEFAULT_UPDATES

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = __doc__
    g = p.add_argument_group("run")
    g.add_argument("--weights", type=existing_path,
                   help="the trained float checkpoint (yolov9-* keeps PGI in QAT)")
    g.add_argument("--data", help="training data: a dataset (default: the checkpoint's own), "
                                  "or a folder of unlabeled images or a video (distillation)")
    g.add_argument("--target", help="intel | rpi | jetson, or a board (rpi5, jetson-orin-nano, "
                                    "...): the quantization scheme of its runtime")
    g.add_argument("--variant", choices=VARIANTS,
                   help="pgi: dual loss, auxiliary branch in float (default for a PGI model); "
                        "distill: distillation from the float model (+ the task loss where "
                        "there are labels; the only one without); task: task loss only")
    g.add_argument("--recipe", type=existing_path,
                   help="QAT recipe YAML (recipes/qat-*.yaml); flags override it")
    g.add_argument("--calib", help="images that initialise the quantizer ranges (default: "
                                   "--data, train split)")
    g.add_argument("--calib-size", dest="calib_size", type=positive_int)
    g.add_argument("--out", type=output_dir, help="run directory (default runs/qat)")
    g.add_argument("--exist-ok", action="store_true", help="allow --out to hold an earlier run")
    g.add_argument("--resume", metavar="RUN", type=existing_path,
                   help="continue a QAT run: its directory or its last.pt")
    h = p.add_argument_group("schedule")
    h.add_argument("--updates", type=positive_int,
                   help=f"optimizer updates to make (default {DEFAULT_UPDATES})")
    h.add_argument("--epochs", type=positive_int, help=argparse.SUPPRESS)  # said, see run()
    h.add_argument("--accumulate", type=positive_int,
                   help="batches whose gradients make one update (default 1)")
    h.add_argument("--holdout", type=positive_int,
                   help="images held out of --data to score the start and the end "
                        "(default 10 %%, 1 to 200)")
    h.add_argument("--max-frames", dest="max_frames", type=positive_int,
                   help="frames sampled from a video given as --data (default 1000)")
    h.add_argument("--lr", "--lr0", dest="lr0", type=positive_float, help="initial learning rate")
    h.add_argument("--imgsz", type=image_size,
                   help="size in pixels (default: the board's, else the checkpoint's)")
    h.add_argument("--batch", type=positive_int)
    r = p.add_argument_group("runtime")
    r.add_argument("--device", help="cpu, cuda, cuda:N")
    r.add_argument("--workers", type=non_negative_int)
    r.add_argument("--threads", type=positive_int, help="torch CPU threads")
    r.add_argument("--seed", type=non_negative_int)
    r.add_argument("--no-progress", dest="progress", action="store_false", default=None)


TRAIN_KEYS = ("data", "out", "lr0", "imgsz", "batch", "device", "workers", "threads", "seed",
              "progress")
QAT_KEYS = ("variant", "calib_size", "updates", "accumulate", "holdout", "max_frames")


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from .qat_run import load_qat_recipe, resume_qat, run_qat

    if args.epochs is not None:
        raise UsageError("--epochs: QAT is counted in optimizer updates, whatever the data's "
                         "size: use --updates N (every batch is one update)")
    overrides = {k: getattr(args, k) for k in TRAIN_KEYS}
    overrides["out"] = None if args.out is None else str(args.out)
    if args.resume:
        overrides["updates"] = args.updates
        given = sorted(k for k, v in overrides.items()
                       if v is not None and k not in RESUME_OVERRIDES)
        given += [k for k in ("weights", "target", "recipe", "calib", *QAT_KEYS)
                  if getattr(args, k) is not None and k not in RESUME_OVERRIDES]
        if given:
            raise UsageError(
                f"{', '.join('--' + k.replace('_', '-') for k in given)} cannot change on "
                f"--resume (the run keeps its config; only "
                f"{', '.join('--' + k for k in RESUME_OVERRIDES)} may)"
            )
        result = resume_qat(args.resume, {k: overrides[k] for k in RESUME_OVERRIDES})
        _summary(result)
        return 0
    if args.weights is None or args.target is None:
        raise UsageError("--weights and --target are required (or --resume RUN)")
    target, board_imgsz = _target(args.target)
    from ..models import load_checkpoint
    from ..train.config import read_recipe

    ckpt = load_checkpoint(args.weights)
    overrides["model"] = ckpt["model"]
    in_recipe = read_recipe(args.recipe) if args.recipe else {}
    # flag > recipe > (board, for imgsz) > what the checkpoint was trained with
    if overrides["data"] is None and "data" not in in_recipe:
        overrides["data"] = _checkpoint_data(ckpt)
        if overrides["data"] is None:
            raise UsageError(f"{args.weights} does not name its dataset: pass --data")
    if overrides["imgsz"] is None and "imgsz" not in in_recipe:
        overrides["imgsz"] = board_imgsz or ckpt.get("imgsz")
    qat_overrides = {k: getattr(args, k) for k in QAT_KEYS}
    cfg, qcfg = load_qat_recipe(args.recipe, overrides, qat_overrides)
    out = Path(cfg.out)
    if (out / "last.pt").exists() and not args.exist_ok:
        raise UsageError(f"{out} already holds a run (last.pt); continue it with --resume "
                         f"{out}, or pass --exist-ok / another --out")
    result = run_qat(Path(args.weights), target, cfg, qcfg, calib=args.calib,
                     recipe_path=args.recipe)
    _summary(result)
    return 0


def _target(name: str) -> tuple[str, int | None]:
    """A target or board name -> (target, the board's image size or None)."""
    from ..errors import UsageError
    from ..export.targets import TargetError, resolve
    from .qat import SCHEMES

    try:
        spec, _, device = resolve(name)
    except TargetError as e:
        raise UsageError(f"--target: {e}") from None
    if spec.name not in SCHEMES:
        raise UsageError(f"--target {name}: QAT is for an int8 target: "
                         f"{', '.join(SCHEMES)} or one of their boards")
    return spec.name, device.imgsz if device else None


def _checkpoint_data(ckpt: dict) -> str | None:
    config = ckpt.get("train_config")
    value = config.get("data") if isinstance(config, dict) else None
    return value if isinstance(value, str) and value else None


def _summary(result: object) -> None:
    from ..models import load_checkpoint

    best = getattr(result, "best", None)
    record = load_checkpoint(best)["qat"]
    end = record["holdout"]["end"]
    print(f"best: {best}  ({record['updates']} updates; fidelity {end['fidelity']:.2f} on "
          f"{record['holdout']['images']} held-out images, fake-quantized; init.pt: the start)")
    print(f"next: edge-yolo export --weights {best} --target {record['target']} "
          "--precision int8")
