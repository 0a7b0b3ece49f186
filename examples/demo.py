"""The whole path on built-in data: train -> drop PGI -> evaluate -> export -> Detector.

This is what ``make demo`` runs. It trains YOLOv9-T on the synthetic shapes dataset
(``recipes/demo-synthetic.yaml``), evaluates best.pt without its auxiliary branch, exports it to
every target whose runtime works on this machine, and scores every bundle through the same
``Detector`` pre/post-processing and the same COCO evaluator, so the table at the end says what
each export cost in accuracy. Each step prints the ``edge-yolo`` command that does the same.

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

# (target, precision): the jetson bundles hold the ONNX TensorRT builds its engine from; here
# onnxruntime runs them (TensorRT needs the device), the Q/DQ one included.
EXPORTS = [
    ("onnx", "fp32"),
    ("intel", "fp32"),
    ("intel", "fp16"),
    ("intel", "int8"),
    ("rpi", "fp32"),
    ("rpi", "fp16"),
    ("rpi", "int8"),
    ("jetson", "fp16"),
    ("jetson", "int8"),
]


def run(cmd: list[str]) -> None:
    shown = ["edge-yolo", *cmd[cmd.index("-m") + 2 :]] if "-m" in cmd else cmd
    print("\n$ " + " ".join(shown), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "demo")
    ap.add_argument("--recipe", type=Path, default=REPO / "recipes" / "demo-synthetic.yaml")
    ap.add_argument("--skip-train", action="store_true", help="reuse OUT/train/best.pt")
    ap.add_argument("--threads", type=int, default=None, help="runtime threads (default: all)")
    args = ap.parse_args()
    edge_yolo = [sys.executable, "-m", "edge_yolo"]
    train_dir, bundles_dir = args.out / "train", args.out / "bundles"

    t0 = time.perf_counter()
    if not args.skip_train:
        if train_dir.exists():
            shutil.rmtree(train_dir)
        run([*edge_yolo, "train", "--recipe", str(args.recipe), "--out", str(train_dir)])
    best = train_dir / "best.pt"
    print(f"\ntraining + evaluation: {time.perf_counter() - t0:.0f} s")

    from edge_yolo import Detector
    from edge_yolo.data import load_dataset
    from edge_yolo.eval import EVAL, evaluate_detector, evaluate_model
    from edge_yolo.export import export
    from edge_yolo.models import load_model
    from edge_yolo.train.config import load_recipe

    cfg = load_recipe(args.recipe)
    val = load_dataset(cfg.data, split="val")
    model, ckpt = load_model(best)
    if model.aux is not None:
        model.drop_auxiliary()
    model.fuse()
    imgsz = int(ckpt.get("imgsz", cfg.imgsz))
    baseline = evaluate_model(model, val, imgsz=imgsz, progress=False)
    rows = [("torch (gelan-t, fused)", "fp32", baseline.map50_95, baseline.map50, None, None, "")]

    for target, precision in EXPORTS:
        print(
            f"\n$ edge-yolo export --weights {best} --target {target} --precision {precision}"
            f" --calib {cfg.data} --out {bundles_dir}",
            flush=True,
        )
        t = time.perf_counter()
        try:
            bundle = export(best, target, precision=precision, calib=cfg.data, out=bundles_dir,
                            force=True)  # the demo owns its bundles folder
        except Exception as e:  # a target whose toolchain is missing here is reported, not fatal
            print(f"  export failed: {type(e).__name__}: {e}")
            nan = float("nan")
            rows.append((target, precision, nan, nan, None, None, "export failed"))
            continue
        export_s = time.perf_counter() - t
        backend = "onnxruntime" if target == "jetson" else None
        detector = Detector(bundle, backend=backend, threads=args.threads)
        result = evaluate_detector(detector, val, progress=False)  # the same EVAL settings
        size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file()) / 1e6
        note = f"{size:.1f} MB, export {export_s:.0f} s"
        if backend:
            note += f", run by {backend}"
        rows.append((target, precision, result.map50_95, result.map50, bundle, backend, note))

    print(
        f"\nAccuracy on the synthetic val split ({len(val)} images, {imgsz} px), COCO protocol, "
        f"every row with {EVAL}:"
    )
    print(f"{'artifact':24s} {'prec':5s} {'mAP50-95':>8s} {'mAP50':>7s} {'delta':>7s}  notes")
    for name, precision, m, m50, _, _, note in rows:
        delta = m - baseline.map50_95
        print(f"{name:24s} {precision:5s} {m:8.3f} {m50:7.3f} {delta:+7.3f}  {note}")

    predict_dir = args.out / "predict"
    bundles = [(r[4], r[5]) for r in rows if r[4] is not None]
    if bundles:
        images = args.out / "val-images"
        images.mkdir(parents=True, exist_ok=True)
        import cv2

        for i in range(4):
            cv2.imwrite(str(images / f"val{i}.jpg"), val[i].image)
        for bundle, backend in bundles:
            cmd = [*edge_yolo, "predict", str(bundle), str(images), "--out"]
            cmd += [str(predict_dir / bundle.name)] + (["--backend", backend] if backend else [])
            run(cmd)
    print(f"\ndemo done in {time.perf_counter() - t0:.0f} s; outputs under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
