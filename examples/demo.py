"""The whole path on built-in data: train -> QAT -> export to every target -> report.

This is what ``make demo`` runs, on the synthetic shapes dataset, on a 2-core CPU:

1. ``edge-yolo train``: YOLOv9-T (PGI) from scratch (``recipes/demo-synthetic.yaml``);
2. ``edge-yolo qat``: quantization-aware fine-tuning of best.pt for each target's int8 scheme
   (OpenVINO, TFLite, TensorRT Q/DQ), the PGI branch kept in float
   (``recipes/qat-demo.yaml``);
3. ``edge-yolo report``: exports FP32, INT8 PTQ and INT8 QAT for every target and scores each
   with the float model through the same Detector and evaluator, beside the fake-quant torch
   rows; it prints the table and writes JSON, Markdown and HTML;
4. ``edge-yolo predict``: annotated validation images from the float model and the int8 QAT
   bundles, so a person can see what each finds.

Each step prints the ``edge-yolo`` command that does the same.

    .venv/bin/python examples/demo.py [--out runs/demo] [--skip-train]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("intel", "rpi", "jetson")


def run(cmd: list[str]) -> None:
    shown = ["edge-yolo", *cmd[cmd.index("-m") + 2 :]] if "-m" in cmd else cmd
    print("\n$ " + " ".join(shown), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "demo")
    ap.add_argument("--recipe", type=Path, default=REPO / "recipes" / "demo-synthetic.yaml")
    ap.add_argument("--qat-recipe", type=Path, default=REPO / "recipes" / "qat-demo.yaml")
    ap.add_argument("--skip-train", action="store_true", help="reuse OUT/train/best.pt")
    ap.add_argument("--skip-qat", action="store_true", help="reuse OUT/qat-*/best.pt")
    ap.add_argument("--threads", type=int, default=None, help="runtime threads (default: all)")
    args = ap.parse_args()
    edge_yolo = [sys.executable, "-m", "edge_yolo"]
    train_dir = args.out / "train"
    best = train_dir / "best.pt"
    t0 = time.perf_counter()
    times = {}

    if not args.skip_train:
        if train_dir.exists():
            shutil.rmtree(train_dir)
        run([*edge_yolo, "train", "--recipe", str(args.recipe), "--out", str(train_dir)])
    times["train"] = time.perf_counter() - t0

    qats = []
    for target in TARGETS:
        qat_dir = args.out / f"qat-{target}"
        if not args.skip_qat:
            if qat_dir.exists():
                shutil.rmtree(qat_dir)
            run([*edge_yolo, "qat", "--weights", str(best), "--target", target,
                 "--recipe", str(args.qat_recipe), "--out", str(qat_dir)])
        qats.append(qat_dir / "best.pt")
    times["qat"] = time.perf_counter() - t0 - times["train"]

    report_dir = args.out / "report"
    threads = ["--threads", str(args.threads)] if args.threads else []
    # int8 only: that FP32 exports score exactly what the float model scores is tested (and
    # `edge-yolo report --precisions fp32,int8` shows it). Scored on the first 100 val images
    # (synthetic:500 -> 100 val), those training evaluated on; 100 bootstrap resamples.
    run([*edge_yolo, "report", "--weights", str(best), "--data", "synthetic:500",
         "--targets", ",".join(TARGETS), "--precisions", "int8", "--resamples", "100",
         "--qat", *map(str, qats), "--out", str(report_dir), *threads])
    times["export + report"] = time.perf_counter() - t0 - times["train"] - times["qat"]

    from edge_yolo.data import load_dataset

    images = args.out / "val-images"
    images.mkdir(parents=True, exist_ok=True)
    import cv2

    val = load_dataset("synthetic:500", split="val")
    for i in range(4):
        cv2.imwrite(str(images / f"val{i}.jpg"), val[i].image)
    predict = args.out / "predict"
    run([*edge_yolo, "predict", str(best), str(images), "--out", str(predict / "float")])
    for bundle in sorted((report_dir / "bundles").glob("*-int8-qat")):
        backend = ["--backend", "onnxruntime"] if "jetson" in bundle.name else []
        run([*edge_yolo, "predict", str(bundle), str(images), "--out",
             str(predict / bundle.name), *backend])
    total = time.perf_counter() - t0
    print("\n" + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items())
          + f"; demo done in {total / 60:.1f} min; outputs under {args.out}")
    print(f"report: {report_dir / 'report.html'}; annotated images: {predict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
