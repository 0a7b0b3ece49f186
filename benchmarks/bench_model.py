"""Forward latency of GELAN-t/s in torch eager and the cost of the numpy post-processing.

Run by hand: ``.venv/bin/python benchmarks/bench_model.py [--threads 2] [--runs 30]``.
Prints medians measured side by side in one run, and the post-processing / forward ratio
(target: under 5% of the gelan-t forward at 640).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from edge_yolo.models import create_model, flatten_outputs
from edge_yolo.runtime.processing import LetterboxInfo, postprocess


def median_ms(fn, runs: int, warmup: int = 3) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def realistic_logits(nc: int, anchors: int, positives: int, seed: int = 0):
    """Raw outputs shaped like a trained model's on a busy frame: background anchors far below
    any threshold, ``positives`` anchors (clustered objects) above it."""
    rng = np.random.default_rng(seed)
    cls = rng.normal(-9.0, 1.5, size=(nc, anchors)).astype(np.float32)
    hot = rng.choice(anchors, positives, replace=False)
    cls[rng.integers(0, nc, positives), hot] = rng.normal(1.0, 1.0, positives)
    box = rng.normal(0.0, 2.0, size=(64, anchors)).astype(np.float32)
    return box, cls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {args.threads} threads, median/p90 of {args.runs} runs")
    print(f"{'model':10s} {'imgsz':>5s} {'median ms':>10s} {'p90 ms':>8s}")
    forward = {}
    for name in ("gelan-t", "gelan-s"):
        model = create_model(name, num_classes=80).fuse().eval()
        for imgsz in (320, 640):
            x = torch.rand(1, 3, imgsz, imgsz)
            with torch.inference_mode():
                med, p90 = median_ms(lambda m=model, x=x: m(x), args.runs)
            forward[name, imgsz] = med
            print(f"{name:10s} {imgsz:5d} {med:10.1f} {p90:8.1f}")

    info = LetterboxInfo(1.0, (0.0, 0.0), (640, 640), (640, 640))
    print("\nnumpy post-processing, 640x640 frame (8400 anchors, 80 classes), conf 0.25:")
    for positives in (0, 50, 500):
        box, cls = realistic_logits(80, 8400, positives)
        med, p90 = median_ms(lambda b=box, c=cls: postprocess(b, c, info, conf=0.25), 200)
        n = len(postprocess(box, cls, info, conf=0.25)[0])
        ratio = med / forward["gelan-t", 640]
        print(
            f"  {positives:4d} anchors above conf -> {n:3d} boxes: median {med:.2f} ms, "
            f"p90 {p90:.2f} ms = {100 * ratio:.1f}% of the gelan-t forward at 640"
        )

    model = create_model("gelan-t", num_classes=80).fuse().eval()
    with torch.inference_mode():
        box, cls = (t[0].numpy() for t in flatten_outputs(model(torch.rand(1, 3, 640, 640))))
    med, _ = median_ms(lambda: postprocess(box, cls, info, conf=0.25), 200)
    print(f"  untrained gelan-t outputs (nothing above conf): median {med:.2f} ms")


if __name__ == "__main__":
    main()
