"""Does it learn, and what does PGI buy? YOLOv9-T vs GELAN-T from scratch, same data and budget.

Run by hand (20+ minutes): ``.venv/bin/python benchmarks/bench_learning.py [--epochs 12]``.
Trains both models with the same recipe side by side, one process and one thread each (so
neither steals the other's core, and the comparison is fair on a 2-core machine), then prints
the per-epoch validation curves and the final mAP of each, evaluated the way it is deployed
(auxiliary branch dropped, fused). Target (issue 3): YOLOv9-T reaches mAP50-95 >= 0.5 on the
synthetic val split within 20 minutes at 256-320 px.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", type=Path, default=REPO / "recipes" / "demo-synthetic.yaml")
    ap.add_argument("--data", default="synthetic:1000")
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench-learning")
    ap.add_argument("--models", nargs="+", default=["yolov9-t", "gelan-t"])
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        procs = {}
        for model in args.models:
            cmd = [
                sys.executable, "-m", "edge_yolo", "train", "--recipe", str(args.recipe),
                "--model", model, "--data", args.data, "--imgsz", str(args.imgsz),
                "--epochs", str(args.epochs), "--eval-interval", "2", "--threads", "1",
                "--out", str(args.out / model), "--exist-ok", "--no-progress",
            ]  # fmt: skip
            print("$ " + " ".join(cmd[2:]), flush=True)
            log = stack.enter_context(open(args.out / f"{model}.log", "w"))
            procs[model] = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        for model, proc in procs.items():
            code = proc.wait()
            minutes = (time.perf_counter() - started) / 60
            print(f"{model}: exit {code} after {minutes:.1f} min (log {args.out / model}.log)")

    print(f"\n{'model':9s} {'epoch':>5s} {'min':>6s} {'mAP50-95':>8s} {'mAP50':>7s}")
    for model in args.models:
        path = args.out / model / "results.json"
        if not path.is_file():
            print(f"{model}: no results.json")
            continue
        doc = json.loads(path.read_text())
        minutes = 0.0
        for row in doc["epochs"]:
            minutes += row.get("time", 0.0) / 60
            m = row.get("val/map50_95")
            if m is not None:
                print(
                    f"{model:9s} {row['epoch']:5d} {minutes:6.1f} {m:8.3f} {row['val/map50']:7.3f}"
                )
        final = doc.get("final")
        if final:
            print(
                f"{model:9s} final (best.pt, aux dropped, fused): "
                f"mAP50-95 {final['map50_95']:.3f}, mAP50 {final['map50']:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
