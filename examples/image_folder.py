"""Detect objects in every image of a folder; write annotated copies and a JSON summary.

python examples/image_folder.py --bundle gelan-t-onnx-fp32 --source photos/ --out results/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2

from edge_yolo import Detector

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", required=True, help="exported bundle directory or model file")
    p.add_argument("--source", required=True, type=Path, help="folder of images")
    p.add_argument("--out", required=True, type=Path, help="folder for the annotated images")
    p.add_argument("--threads", type=int, help="inference threads (default: all cores)")
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=8, help="images per Detector.batch call")
    args = p.parse_args()

    files = sorted(f for f in args.source.iterdir() if f.suffix.lower() in SUFFIXES)
    if not files:
        raise SystemExit(f"image_folder.py: no images in {args.source}")
    detector = Detector(args.bundle, threads=args.threads, conf=args.conf)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for start in range(0, len(files), args.batch):
        chunk = files[start : start + args.batch]
        images = [cv2.imread(str(f)) for f in chunk]
        # cv2.imread returns None for unreadable files: pass the path so the error names it.
        inputs = [img if img is not None else f for img, f in zip(images, chunk)]
        for f, image, dets in zip(chunk, images, detector.batch(inputs)):
            cv2.imwrite(str(args.out / f.name), dets.draw(image))
            summary[f.name] = dets.to_dict()
            print(f"{f.name}: {len(dets)} objects {sorted(set(dets.labels))}")
    (args.out / "detections.json").write_text(json.dumps(summary, indent=1))
    print(f"{len(files)} images -> {args.out}")


if __name__ == "__main__":
    main()
