"""``edge-yolo val``: COCO mAP50-95 / mAP50 (and per-class AP) of a checkpoint or a bundle.

A checkpoint is scored as it is deployed: its EMA weights, the PGI branch dropped and
BN/RepConv fused (``--no-fuse`` keeps the training form, e.g. to compare the two). A bundle
directory or a lone model file is scored through its own runtime backend. Both go through
the same ``Detector`` path and the same settings, printed with the result.
"""

from __future__ import annotations

import argparse
import json

from ..cli_args import (
    confidence,
    existing_path,
    image_size,
    iou_threshold,
    output_file,
    positive_int,
)
from .val import EVAL, EvalSettings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, type=existing_path,
                   help="edge-yolo checkpoint (.pt), bundle directory or exported model file")
    p.add_argument(
        "--data", required=True, help="data YAML, COCO JSON, VOC folder or synthetic[:N]"
    )
    p.add_argument("--split", default="val", help="dataset split (default val)")
    p.add_argument("--imgsz", type=image_size,
                   help="input size of a checkpoint (default: its own)")
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=positive_int, help="inference threads of a bundle's backend")
    p.add_argument("--conf", type=confidence, default=EVAL.conf,
                   help=f"score threshold (default {EVAL.conf:g})")
    p.add_argument("--iou", type=iou_threshold, default=EVAL.iou,
                   help=f"NMS IoU threshold (default {EVAL.iou:g})")
    p.add_argument("--max-images", dest="max_images", type=positive_int,
                   help="evaluate the first N only")
    p.add_argument("--no-fuse", dest="fuse", action="store_false", help="keep BN/RepConv unfused")
    p.add_argument("--json", type=output_file, help="also write the metrics to this JSON file")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def run(args: argparse.Namespace) -> int:
    from ..fileio import atomic_write_text
    from .val import validate

    settings = EvalSettings(conf=args.conf, iou=args.iou, max_det=EVAL.max_det)
    given = ("split", "imgsz", "batch", "device", "threads", "fuse", "max_images", "progress")
    result, info = validate(
        args.weights, args.data, settings=settings, **{k: getattr(args, k) for k in given}
    )
    if info["kind"] == "checkpoint":
        form = "PGI branch dropped" if info["trained_as"] != info["model"] else "no PGI branch"
        what = f"{info['model']} ({form}{', fused' if info['fused'] else ''})"
    else:
        what = f"{info['model']} {info['target']}/{info['precision']} on {info['backend']}"
    print(f"{args.weights}: {what}, {info['imgsz']} px, {args.data} [{args.split}]; {settings}")
    print(result)
    if args.json:
        atomic_write_text(args.json, json.dumps({**info, **result.to_dict()}, indent=1) + "\n")
    return 0
