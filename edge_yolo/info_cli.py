"""``edge-yolo info``: describe a checkpoint or a bundle, or build registered models.

``edge-yolo info best.pt`` or ``edge-yolo info exports/gelan-t-rpi5-int8``: model, classes,
input size, precision, calibration and the metrics recorded with it. ``edge-yolo info gelan-t``
(or no argument: every registered model): build, fuse, print the summary, run a forward pass.
Outside ``edge_yolo.models`` so that building the CLI parser never imports torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_args import image_size, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="*",
                   help="checkpoints (.pt), bundles, or model names (default: every registered "
                        "model)")
    p.add_argument("--num-classes", type=positive_int, default=80)
    p.add_argument("--imgsz", type=image_size, default=640)


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from edge_yolo.models import create_model, list_models, model_summary
    from edge_yolo.models.decode import decode_outputs

    from .errors import UsageError

    files = [m for m in args.models if Path(m).exists()]
    for path in files:
        print(describe(Path(path)))
    args.models = [m for m in args.models if m not in files]
    if files and not args.models:
        return 0
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


def describe(path: Path) -> str:
    """What a checkpoint or a bundle is, from what it records about itself."""
    from edge_yolo.runtime.backends import read_metadata
    from edge_yolo.runtime.bundle import META_FILE, BundleMeta

    if path.suffix == ".pt":
        from edge_yolo.models import load_checkpoint

        ckpt = load_checkpoint(path)
        metrics = ckpt.get("metrics") or {}
        train = ckpt.get("train")
        lines = [
            f"{path}: edge-yolo checkpoint, model {ckpt['model']}, {ckpt['num_classes']} classes "
            f"({', '.join(ckpt['names'][:8])}{', ...' if ckpt['num_classes'] > 8 else ''}), "
            f"{ckpt.get('imgsz', '?')} px",
            f"  weights: {'EMA' if train else 'deployable'}"
            + (f", after epoch {train['epoch']} (resumable: optimizer state kept)" if train
               else f", from epoch {ckpt['epoch']} (no optimizer state)" if "epoch" in ckpt
               else ""),
        ]
        if metrics.get("val/map50_95") is not None:
            lines.append(f"  val mAP50-95 {metrics['val/map50_95']:.4f}  mAP50 "
                         f"{metrics['val/map50']:.4f}")
        data = (ckpt.get("train_config") or {}).get("data")
        if data:
            lines.append(f"  trained on {data}")
        qat = ckpt.get("qat")
        if isinstance(qat, dict):
            q = qat.get("quantizers", {})
            lines.append(
                f"  QAT for {qat.get('target')} (variant {qat.get('variant')}): "
                f"{q.get('weight_quantizers', '?')} weight and "
                f"{q.get('activation_quantizers', '?')} activation fake quantizers; from "
                f"{qat.get('source_checkpoint')}; export with --precision int8"
            )
            held = qat.get("holdout") or {}
            if qat.get("stage") == "init":
                lines.append("  QAT start: quantizers initialised, no update made (init.pt)")
            elif "end" in held:
                lines.append(
                    f"  QAT made {qat.get('updates')} updates; fidelity to the float model on "
                    f"{held['images']} held-out images {held['init']['fidelity']:.2f} at the "
                    f"start, {held['end']['fidelity']:.2f} at the end")
        return "\n".join(lines)
    meta = (BundleMeta.read(path) if path.is_dir() or path.name == META_FILE
            else read_metadata(path))
    lines = [
        f"{path}: {meta.model} bundle for {meta.target}"
        + (f" ({meta.extra['device']})" if meta.extra.get("device") else "")
        + f", {meta.precision} ({meta.quantization}) on {meta.backend}, "
          f"{meta.imgsz[0]}x{meta.imgsz[1]} {meta.layout}, {meta.num_classes} classes "
          f"({', '.join(meta.names[:8])}{', ...' if meta.num_classes > 8 else ''})",
    ]
    if meta.calibration:
        c = meta.calibration
        lines.append(f"  calibration: {c.num_images} images from {c.dataset} [{c.split or '-'}]")
    qat = meta.extra.get("qat")
    if meta.extra.get("quantization_kind") == "qat" and isinstance(qat, dict):
        lines.append(f"  quantization-aware trained ({qat.get('variant')}): "
                     f"{qat.get('checkpoint')} from {qat.get('source_checkpoint')}")
    if meta.extra.get("float_blocks"):
        lines.append(f"  kept in float (mixed precision): {', '.join(meta.extra['float_blocks'])}")
    acc = meta.accuracy
    if "score_mean_abs_diff" in acc:
        from .runtime.verify import agreement_text

        lines.append(f"  agreement with the float model: {agreement_text(acc)}")
    if "report" in acc:
        r = acc["report"]
        lines.append(f"  report: mAP50-95 {100 * r['map50_95']:.2f} ({r['delta']:+.2f} points vs "
                     f"float, 95% CI {r['delta_ci'][0]:+.2f}..{r['delta_ci'][1]:+.2f}) on "
                     f"{r['dataset']} [{r['split']}], {r['images']} images")
    lines.append(f"  files: {len(meta.files)} with SHA-256 recorded; exported by edge-yolo "
                 f"{meta.edge_yolo_version}")
    return "\n".join(lines)
