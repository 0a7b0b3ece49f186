"""Everything edge-yolo issue 11 measures, in one run (run by hand).

For gelan-t at 320 and 640 px, one after the other on the same machine:

1. ``bench_export.py``: the pre / infer / post split and end-to-end median / p90 of f32,
   bf16 and INT8 on OpenVINO and of FP32 and INT8 on TFLite, side by side in interleaved
   rounds, with the issue's targets checked (INT8 against bf16 and f32, pre+post < 5 %);
2. ``bench_camera.py --camera-fps``: the camera loop's throughput and latency, synchronous
   against OpenVINO's streams, on the INT8 bundle of each size, with a camera faster than
   the model;
3. ``bench_train.py --loop``: training images/s of gelan-t and yolov9-t at 320 px, batch 8,
   against ``--baseline REF`` (another commit, alternating) when given.

Each step is its own script, so each fact is measured in one place; this one runs them in
order and keeps the bundles of step 1 for step 2::

    .venv/bin/python benchmarks/bench_issue11.py --out runs/bench --baseline 0759472
    .venv/bin/python benchmarks/bench_issue11.py --out runs/bench --reuse --quick
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = (320, 640)


def step(title: str, argv: list[str]) -> int:
    print(f"\n## {title}\n$ {' '.join(argv[1:])}", flush=True)
    return subprocess.run(argv, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="where the bundles are kept")
    ap.add_argument("--reuse", action="store_true", help="measure the bundles already in --out")
    ap.add_argument("--weights", type=Path, help="a checkpoint (default: bench_export's own)")
    ap.add_argument("--baseline", metavar="REF", help="training: the commit to compare with")
    ap.add_argument("--quick", action="store_true", help="fewer runs, frames and steps")
    ap.add_argument("--skip", nargs="*", default=[], choices=["export", "camera", "train"])
    args = ap.parse_args(argv)

    py = sys.executable
    failed = []
    if "export" not in args.skip:
        cmd = [py, str(HERE / "bench_export.py"), "--out", str(args.out),
               "--imgsz", *map(str, SIZES), "--runs", "20" if args.quick else "60",
               "--only", "intel:fp32", "intel:bf16", "intel:int8", "rpi:fp32", "rpi:int8"]
        cmd += ["--reuse"] if args.reuse else []
        cmd += ["--weights", str(args.weights)] if args.weights else []
        if step("inference: pre / infer / post, OpenVINO and TFLite", cmd):
            failed.append("export targets")  # bench_export exits 1 when a target is missed
    if "camera" not in args.skip:
        frames = ["--frames", "200", "--warmup-frames", "40"] if args.quick else [
            "--frames", "600", "--warmup-frames", "100"]
        for size in SIZES:
            bundle = args.out / str(size) / "gelan-t-intel-int8"
            if not bundle.is_dir():
                print(f"no {bundle}: run the export step first", file=sys.stderr)
                failed.append(f"camera {size}")
                continue
            cmd = [py, str(HERE / "bench_camera.py"), str(bundle), "--camera-fps", "240",
                   *frames]
            if step(f"camera loop at {size} px: synchronous against streamed", cmd):
                failed.append(f"camera {size}")
    if "train" not in args.skip:
        cmd = [py, str(HERE / "bench_train.py"), "--iters", "3" if args.quick else "12"]
        cmd += ["--loop", "--baseline", args.baseline] if args.baseline else []
        if step("training images/s, 320 px, batch 8", cmd):
            failed.append("training")
    print(f"\n{'missed or failed: ' + ', '.join(failed) if failed else 'all steps ran'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
