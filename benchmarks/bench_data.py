"""Images per second of the training data pipeline (load + mosaic/mixup/affine/HSV/flip + collate).

Run by hand: ``.venv/bin/python benchmarks/bench_data.py [--imgsz 320] [--workers 0]``.
Prints wall-clock and CPU-time throughput for the synthetic set and (when present) the raccoon
photos, augmented and plain, and the ratio to the training step's ~7 images/s on a 2-core
CPU: the data pipeline must stay a small fraction of a step. CPU time is the figure to compare
across machines; wall time depends on what else runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import torch

from edge_yolo.data import DetectionLoader, load_dataset

RACCOON = Path(__file__).resolve().parents[1].parent / "shared/datasets/raccoon"
TRAIN_STEP_IMAGES_PER_S = 7.0


def throughput(
    spec: str, imgsz: int, augment: bool, workers: int, batch: int
) -> tuple[float, float]:
    """(wall images/s, CPU-time images/s of this process) over one epoch after a warm-up batch."""
    kwargs = {"imgsz": imgsz} if spec.startswith("synthetic") else {}
    dataset = load_dataset(spec, "train", **kwargs)
    loader = DetectionLoader(dataset, imgsz, batch, augment=augment, workers=workers, seed=0)
    batches = iter(loader)
    next(batches)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    for images, _, _ in batches:
        n += len(images)
    return n / (time.perf_counter() - t0), n / max(time.process_time() - c0, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--images", type=int, default=512, help="synthetic images per epoch")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)  # one core's worth, the budget of one loader worker
    specs = [f"synthetic:{args.images}"] + ([str(RACCOON)] if RACCOON.is_dir() else [])
    print(f"imgsz {args.imgsz}, batch {args.batch}, workers {args.workers}")
    for spec in specs:
        for augment in (True, False):
            wall, cpu = throughput(spec, args.imgsz, augment, args.workers, args.batch)
            mode = "augmented" if augment else "plain    "
            print(
                f"  {Path(spec).name:<16} {mode}  {wall:7.1f} img/s wall  {cpu:7.1f} img/s CPU"
                f"  ({wall / TRAIN_STEP_IMAGES_PER_S:5.1f}x the training step)"
            )


if __name__ == "__main__":
    main()
