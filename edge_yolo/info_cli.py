"""``edge-yolo info``: build registered models, fuse them, print summaries, run a forward pass.

Outside ``edge_yolo.models`` so that building the CLI parser never imports torch.
"""

from __future__ import annotations

import argparse

from .cli_args import image_size, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="*", help="model names (default: all registered)")
    p.add_argument("--num-classes", type=positive_int, default=80)
    p.add_argument("--imgsz", type=image_size, default=640)


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from edge_yolo.models import create_model, list_models, model_summary
    from edge_yolo.models.decode import decode_outputs

    from .errors import UsageError

    unknown = [m for m in args.models if m not in list_models()]
    if unknown:
        raise UsageError(
            f"unknown model {', '.join(map(repr, unknown))}; registered: {', '.join(list_models())}"
        )
    for name in args.models or list_models():
        model = create_model(name, num_classes=args.num_classes).eval()
        print(model_summary(model, args.imgsz))
        if model.aux is not None:
            model.drop_auxiliary()
        model.fuse()
        print("  " + model_summary(model, args.imgsz))
        x = torch.rand(1, 3, args.imgsz, args.imgsz)
        with torch.no_grad():
            t0 = time.perf_counter()
            outputs = model(x)
            dt = (time.perf_counter() - t0) * 1e3
            boxes, scores = decode_outputs(outputs, model.strides, model.reg_max)
        shapes = ", ".join(f"{tuple(b.shape[1:])}+{tuple(c.shape[1:])}" for b, c in outputs)
        print(f"  forward {dt:.0f} ms: levels {shapes} -> {boxes.shape[1]} anchors")
    return 0
