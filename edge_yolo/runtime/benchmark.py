"""``edge-yolo benchmark BUNDLE [BUNDLE...]``: how fast a bundle runs on this device.

Each bundle is measured in its own process (so its load time and peak memory are its own, not
the sum of everything loaded before it): load, warm-up, then ``--runs`` timed calls on a real
image or a synthetic frame. Reported per bundle: model load time, latency median / p90 / p99
and FPS end to end, the pre / infer / post split (medians), and peak resident memory. Several
bundles run side by side in one invocation, the way FP32 and INT8 (or two boards' exports)
are compared. A table, and JSON with ``--json``. Device-safe: numpy, OpenCV and the bundle's
runtime only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..cli_args import existing_path, non_negative_int, output_file, positive_int

STAGES = ("pre", "infer", "post", "total")


def frame(image: str | None, height: int = 720, width: int = 1280) -> np.ndarray:
    """The benchmark input: a real image, else a deterministic 720p synthetic scene."""
    from .processing import read_image

    if image:
        return read_image(image)
    rng = np.random.default_rng(0)
    scene = np.full((height, width, 3), 114, np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    scene[..., 0] = (xx * 200 // width).astype(np.uint8)
    scene[..., 1] = (yy * 200 // height).astype(np.uint8)
    for _ in range(8):  # a few filled rectangles: something for the post-processing to see
        x, y = int(rng.integers(0, width - 200)), int(rng.integers(0, height - 200))
        scene[y : y + int(rng.integers(40, 200)), x : x + int(rng.integers(40, 200))] = (
            rng.integers(0, 256, 3, dtype=np.uint8)
        )
    return scene


def _rss_mb() -> float:
    """Resident memory now (Linux ``/proc``; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def measure(
    bundle: str | os.PathLike,
    image: np.ndarray,
    *,
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    backend: str | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Load ``bundle`` and time ``runs`` calls on ``image`` after ``warmup`` untimed ones."""
    from .detector import Detector

    rss0 = _rss_mb()
    t0 = time.perf_counter()
    detector = Detector(bundle, threads=threads, backend=backend, device=device)
    load_s = time.perf_counter() - t0
    for _ in range(warmup):
        detector(image)
    stages: dict[str, list[float]] = {k: [] for k in STAGES}
    for _ in range(runs):
        t = time.perf_counter()
        dets = detector(image)
        stages["total"].append((time.perf_counter() - t) * 1e3)
        for k in ("pre", "infer", "post"):
            stages[k].append(dets.timings[k])
    total = np.asarray(stages["total"])
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "bundle": str(bundle),
        "detector": repr(detector),
        "precision": detector.meta.precision,
        "backend": detector.backend.name,
        "imgsz": list(detector.imgsz),
        "threads": detector.backend.threads,
        "runs": runs,
        "warmup": warmup,
        "load_s": round(load_s, 3),
        "ms": {k: round(float(np.median(v)), 3) for k, v in stages.items()},
        "p90_ms": round(float(np.percentile(total, 90)), 3),
        "p99_ms": round(float(np.percentile(total, 99)), 3),
        "fps": round(1e3 / float(np.median(total)), 2),
        "peak_rss_mb": round(peak_kb / 1e3, 1),
        "model_rss_mb": round(_rss_mb() - rss0, 1),
        "detections": len(dets),
    }


def table(results: list[dict[str, Any]]) -> str:
    head = (f"{'bundle':28s} {'backend':12s} {'prec':5s} {'load s':>6s} {'median':>7s} "
            f"{'p90':>7s} {'p99':>7s} {'FPS':>6s} {'pre':>6s} {'infer':>7s} {'post':>6s} "
            f"{'peak MB':>8s}")
    lines = [head]
    for r in results:
        ms = r["ms"]
        lines.append(
            f"{Path(r['bundle']).name[:28]:28s} {r['backend']:12s} {r['precision']:5s} "
            f"{r['load_s']:6.2f} {ms['total']:7.2f} {r['p90_ms']:7.2f} {r['p99_ms']:7.2f} "
            f"{r['fps']:6.1f} {ms['pre']:6.2f} {ms['infer']:7.2f} {ms['post']:6.2f} "
            f"{r['peak_rss_mb']:8.1f}"
        )
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Latency, FPS, load time and peak memory of bundles, side by side."
    p.add_argument("bundles", nargs="+", type=existing_path, help="bundle directories or files")
    p.add_argument("--image", type=existing_path,
                   help="image to run on (default: a 1280x720 synthetic frame)")
    p.add_argument("--runs", type=positive_int, default=50, help="timed runs (default 50)")
    p.add_argument("--warmup", type=non_negative_int, default=5, help="untimed runs first")
    p.add_argument("--threads", type=positive_int, help="inference threads (default: all cores)")
    p.add_argument("--backend", help="run on this backend instead of the one each bundle names")
    p.add_argument("--device", help="runtime device (backend specific)")
    p.add_argument("--json", type=output_file, help="also write the results here as JSON")
    p.add_argument("--in-process", action="store_true",
                   help="measure every bundle in this process (peak memory then accumulates)")


def _child(bundle: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One bundle measured in a fresh interpreter, so its memory and load time are its own."""
    options = {"runs": args.runs, "warmup": args.warmup, "threads": args.threads,
               "backend": args.backend, "device": args.device}
    code = (
        "import json, sys\n"
        "from edge_yolo.runtime.benchmark import frame, measure\n"
        "bundle, image, options = sys.argv[1], sys.argv[2] or None, json.loads(sys.argv[3])\n"
        "print(json.dumps(measure(bundle, frame(image), **options)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(bundle), str(args.image or ""), json.dumps(options)],
        capture_output=True, text=True,
    )
    if proc.returncode:
        from ..errors import UsageError

        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        kind, _, message = last.partition(": ")
        raise UsageError(message if kind.endswith("Error") and message else f"{bundle}: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> int:
    from ..fileio import atomic_write_text

    if args.in_process:
        image = frame(str(args.image) if args.image else None)
        results = [measure(b, image, runs=args.runs, warmup=args.warmup, threads=args.threads,
                           backend=args.backend, device=args.device) for b in args.bundles]
    else:
        results = [_child(b, args) for b in args.bundles]
    what = args.image or "a 1280x720 synthetic frame"
    print(f"{platform.machine()} {platform.processor() or platform.system()}, {what}, "
          f"{args.runs} runs after {args.warmup} warm-up; milliseconds unless stated")
    print(table(results))
    if args.json:
        atomic_write_text(args.json, json.dumps({"results": results}, indent=1) + "\n")
    return 0
