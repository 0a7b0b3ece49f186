"""What a QAT update costs against a training update, on this CPU, side by side in one process.

Run by hand on a quiet machine (about 2 minutes on 2 cores):

    .venv/bin/python benchmarks/bench_qat_step.py [--model yolov9-t] [--imgsz 224] [--batch 8]

Both are the training loop's own update (``forward_train``, the loss, backward, gradient
clipping, the optimizer step, the EMA update) on the same batch: once on the float model as
training runs it (unfused, BatchNorm), once on the QAT model as ``edge-yolo qat`` runs it
(fused, NNCF fake-quantizers on every convolution's weights and inputs, the PGI branch in
float). Rounds alternate between the two so drift on a shared machine hits both alike; the
median of each is printed with their ratio. The issue's target: a QAT update costs no more than
2x a training update. ``--write`` appends the result to ``benchmarks/results/qat-step.md``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="yolov9-t")
    p.add_argument("--imgsz", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="timed updates per round")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--write", action="store_true", help="append to benchmarks/results/qat-step.md")
    args = p.parse_args()

    import copy

    import numpy as np
    import torch

    from edge_yolo.data import load_dataset
    from edge_yolo.data.loader import DetectionLoader
    from edge_yolo.models import create_model
    from edge_yolo.quant.calibration import CalibrationSet
    from edge_yolo.quant.nncf_setup import prepare_extensions
    from edge_yolo.quant.qat import quantize_model
    from edge_yolo.train.ema import ModelEMA
    from edge_yolo.train.loss import build_loss
    from edge_yolo.train.optim import build_optimizer

    if args.threads:
        torch.set_num_threads(args.threads)
    prepare_extensions(print)  # NNCF's kernels: built once, cached (not timed)
    data = f"synthetic:{max(64, args.batch)}"
    images, targets, _ = next(iter(DetectionLoader(
        load_dataset(data, "train", imgsz=args.imgsz), args.imgsz, args.batch, augment=False)))
    torch.manual_seed(0)
    float_model = create_model(args.model, num_classes=5)
    qat_model = copy.deepcopy(float_model).eval()
    qat_model.fuse()
    calib = CalibrationSet([s.image for s in load_dataset(data, "val", imgsz=args.imgsz)], data)
    qat_model = quantize_model(qat_model, calib, args.imgsz, "jetson")

    def updater(model: torch.nn.Module):  # noqa: ANN202 - a closure over one model's state
        model.train()
        criterion = build_loss(model)
        optimizer = build_optimizer(model, 1e-4, 0.937, 5e-4)
        ema = ModelEMA(model)

        def update() -> None:
            loss, _ = criterion(model.forward_train(images), targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ema.update(model)

        return update

    steps = {"train": updater(float_model), "qat": updater(qat_model)}
    times: dict[str, list[float]] = {k: [] for k in steps}
    for update in steps.values():
        update()  # warm-up: first-call allocations and kernel selection
    for _ in range(args.rounds):
        for name, update in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                update()
            times[name].append((time.perf_counter() - t0) / args.steps * 1e3)
    train_ms, qat_ms = (statistics.median(times[k]) for k in ("train", "qat"))
    line = (f"{args.model} {args.imgsz}px batch {args.batch}, {torch.get_num_threads()} threads: "
            f"training update {train_ms:.0f} ms, QAT update {qat_ms:.0f} ms, ratio "
            f"{qat_ms / train_ms:.2f}x (rounds: train {np.round(times['train']).tolist()}, "
            f"qat {np.round(times['qat']).tolist()} ms)")
    print(line)
    if args.write:
        out = REPO / "benchmarks" / "results" / "qat-step.md"
        if not out.exists():
            out.write_text("# A QAT update against a training update (CPU)\n\n"
                           "Made by `benchmarks/bench_qat_step.py`; target: ratio <= 2x.\n\n")
        command = "benchmarks/bench_qat_step.py " + " ".join(sys.argv[1:])
        cpu = platform.processor() or platform.machine()
        with out.open("a") as f:
            f.write(f"- {datetime.date.today()}, {cpu}, `{command}`: {line}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
