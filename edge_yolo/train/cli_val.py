"""``edge-yolo val``: COCO mAP50-95 / mAP50 (and per-class AP) of a checkpoint on a dataset.

The checkpoint is scored as it is deployed: its EMA weights, the PGI branch dropped and
BN/RepConv fused (``--no-fuse`` keeps the training form, e.g. to compare the two).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any


class ValidationError(ValueError):
    """A checkpoint and dataset that cannot be evaluated together; names both."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, type=Path, help="edge-yolo checkpoint (.pt)")
    p.add_argument(
        "--data", required=True, help="data YAML, COCO JSON, VOC folder or synthetic[:N]"
    )
    p.add_argument("--split", default="val", help="dataset split (default val)")
    p.add_argument("--imgsz", type=int, help="input size (default: the checkpoint's)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--conf", type=float, default=0.001)
    p.add_argument("--iou", type=float, default=0.7)
    p.add_argument("--max-images", dest="max_images", type=int, help="evaluate the first N only")
    p.add_argument("--no-fuse", dest="fuse", action="store_false", help="keep BN/RepConv unfused")
    p.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def validate_checkpoint(
    weights: str | os.PathLike,
    data: str,
    *,
    split: str = "val",
    imgsz: int | None = None,
    batch: int = 8,
    device: str | None = None,
    conf: float = 0.001,
    iou: float = 0.7,
    fuse: bool = True,
    max_images: int | None = None,
    progress: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Load ``weights``, drop the PGI branch, fuse, evaluate; returns (EvalResult, info)."""
    from edge_yolo.data import load_dataset
    from edge_yolo.eval.coco import evaluate_model
    from edge_yolo.models import load_model

    from .distributed import select_device
    from .loop import _Head, dataset_kwargs

    model, ckpt = load_model(weights)
    imgsz = imgsz or int(ckpt.get("imgsz", 640))
    dataset = load_dataset(data, split=split, **dataset_kwargs(data, imgsz))
    if len(dataset.names) != model.num_classes:
        raise ValidationError(
            f"{weights}: model predicts {model.num_classes} classes but {data} has "
            f"{len(dataset.names)} ({', '.join(dataset.names[:5])}"
            f"{', ...' if len(dataset.names) > 5 else ''})"
        )
    if max_images:
        dataset = _Head(dataset, max_images)
    trained_as = model.name
    if model.aux is not None:
        model.drop_auxiliary()
    if fuse:
        model.fuse()
    model = model.to(select_device(device)).eval()
    result = evaluate_model(
        model, dataset, imgsz=imgsz, batch_size=batch, conf=conf, iou=iou, progress=progress
    )
    info = {
        "weights": str(weights),
        "trained_as": trained_as,
        "model": model.name,
        "fused": fuse,
        "imgsz": imgsz,
        "data": data,
        "split": split,
    }
    return result, info


def run(args: argparse.Namespace) -> int:
    import sys

    from edge_yolo.data.report import DatasetError
    from edge_yolo.models.checkpoint import CheckpointError

    from .distributed import DeviceError

    try:
        result, info = validate_checkpoint(
            args.weights,
            args.data,
            split=args.split,
            imgsz=args.imgsz,
            batch=args.batch,
            device=args.device,
            conf=args.conf,
            iou=args.iou,
            fuse=args.fuse,
            max_images=args.max_images,
            progress=args.progress,
        )
    except (DatasetError, CheckpointError, DeviceError, ValidationError) as e:
        print(f"edge-yolo val: {e}", file=sys.stderr)
        return 1
    form = "PGI branch dropped" if info["trained_as"] != info["model"] else "no PGI branch"
    print(
        f"{args.weights}: {info['model']} ({form}{', fused' if args.fuse else ''}), "
        f"{info['imgsz']} px, {args.data} [{args.split}]"
    )
    print(result)
    if args.json:
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps({**info, **result.to_dict()}, indent=1))
        os.replace(tmp, args.json)
    return 0
