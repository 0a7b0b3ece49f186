"""On-device latency of a bundle: warm-up, then median / p90 of N runs, split into
pre-processing, inference and post-processing.

    python examples/benchmark_device.py --bundle gelan-t-rpi-int8 --runs 100 --threads 4
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from edge_yolo import Detector
from edge_yolo.runtime import processing


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", required=True, help="exported bundle directory or model file")
    p.add_argument("--image", help="image to run on (default: a 1280x720 noise frame)")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, help="inference threads (default: all cores)")
    p.add_argument("--device", help="runtime device (backend specific)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args()

    detector = Detector(args.bundle, threads=args.threads, device=args.device)
    if args.image:
        image = processing.read_image(args.image)
    else:  # noise: no detections, so post-processing cost is the anchor pruning floor
        image = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    for _ in range(args.warmup):
        detector(image)
    stages: dict[str, list[float]] = {"pre": [], "infer": [], "post": [], "total": []}
    for _ in range(args.runs):
        t0 = time.perf_counter()
        dets = detector(image)
        stages["total"].append((time.perf_counter() - t0) * 1e3)
        for k in ("pre", "infer", "post"):
            stages[k].append(dets.timings[k])
    result = {
        "bundle": str(args.bundle),
        "detector": repr(detector),
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
        "runs": args.runs,
        "ms": {
            k: {"median": float(np.median(v)), "p90": float(np.percentile(v, 90))}
            for k, v in stages.items()
        },
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{detector}\n{args.runs} runs after {args.warmup} warm-up, {result['machine']}")
    for k, v in result["ms"].items():
        print(f"  {k:<6} median {v['median']:7.2f} ms   p90 {v['p90']:7.2f} ms")
    print(f"  -> {1e3 / result['ms']['total']['median']:.1f} FPS")


if __name__ == "__main__":
    main()
