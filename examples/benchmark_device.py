"""On-device latency of a bundle from Python: warm-up, then median / p90 of N runs, split into
pre-processing, inference and post-processing (what ``edge-yolo benchmark`` reports, on one
bundle, in this process).

    python examples/benchmark_device.py --bundle gelan-t-rpi-int8 --runs 100 --threads 4
"""

from __future__ import annotations

import argparse
import json

from edge_yolo.runtime.benchmark import frame, measure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", required=True, help="exported bundle directory or model file")
    p.add_argument("--image", help="image to run on (default: a 1280x720 synthetic frame)")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, help="inference threads (default: all cores)")
    p.add_argument("--device", help="runtime device (backend specific)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args()
    result = measure(args.bundle, frame(args.image), runs=args.runs, warmup=args.warmup,
                     threads=args.threads, device=args.device)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{result['detector']}\n{args.runs} runs after {args.warmup} warm-up, "
          f"loaded in {result['load_s']:.2f} s")
    for stage, ms in result["ms"].items():
        print(f"  {stage:<6} median {ms:7.2f} ms")
    print(f"  p90 {result['p90_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms -> "
          f"{result['fps']:.1f} FPS, peak memory {result['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
