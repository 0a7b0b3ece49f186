"""Pre-processing with and without the runtime taking the uint8 images, side by side.

For each bundle whose backend can take the letterboxed uint8 images (OpenVINO: normalized in
the graph by its pre-processing; TFLite INT8: pixel - 128 is the input), the same Detector is
timed alternately the old way (a float blob from ``processing.to_blob``, then quantized for
TFLite) and the new way, in one process, on a 1280x720 frame::

    .venv/bin/python benchmarks/bench_preprocess.py runs/bench/640/gelan-t-intel-int8 \\
        runs/bench/640/gelan-t-rpi-int8 --threads 2

Printed per bundle and way: median pre / infer / post / total (ms) and (pre + post) / infer.
Then, per bundle, where the pre- and post-processing time goes: the same ``letterbox_into``
and ``postprocess`` calls timed right after an inference (as the Detector runs them) and
again at once (their data and code still in the caches), alternately. The gap is what the
inference evicted; a frame fresh from the camera's decoder is in the caches, this
benchmark's reused frame is not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--image", default=None,
                    help="default: the first raccoon fixture photo as a 1280x720 frame (what "
                         "bench_export runs); 'synthetic' for edge-yolo benchmark's scene")
    args = ap.parse_args(argv)

    import cv2

    from edge_yolo import Detector
    from edge_yolo.runtime.benchmark import frame
    from edge_yolo.runtime.processing import read_image

    if args.image == "synthetic":
        image = frame(None)
    else:
        photos = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "raccoon" / "images"
        image = read_image(args.image or sorted(photos.glob("*.jpg"))[0])
        if args.image is None:
            image = cv2.resize(image, (1280, 720), interpolation=cv2.INTER_LINEAR)
    print(f"{'bundle':<28} {'input':<12} {'pre':>6} {'infer':>7} {'post':>6} {'total':>7} "
          f"{'(pre+post)/infer':>17}")
    for bundle in args.bundles:
        det = Detector(bundle, threads=args.threads)
        if not det.backend.takes_uint8:
            print(f"{bundle}: its backend takes only a float blob", file=sys.stderr)
            continue
        ways = {"float blob": [], "uint8 image": []}
        for i in range(args.runs + 10):  # alternate, so drift hits both ways alike
            for way, runs in ways.items():
                det.backend.takes_uint8 = way == "uint8 image"
                t = det(image).timings
                if i >= 10:
                    runs.append((t["pre"], t["infer"], t["post"]))
        for way, runs in ways.items():
            pre, infer, post = np.median(np.asarray(runs), axis=0)
            print(f"{str(bundle).split('/')[-1][:28]:<28} {way:<12} {pre:6.2f} {infer:7.2f} "
                  f"{post:6.2f} {pre + infer + post:7.2f} {(pre + post) / infer:17.1%}")
        det.backend.takes_uint8 = True
        cold, hot = caches(det, image, args.runs)
        print(f"{'':<28} {'after infer':<12} {cold[0]:6.2f} {'':>7} {cold[1]:6.2f}")
        print(f"{'':<28} {'again, hot':<12} {hot[0]:6.2f} {'':>7} {hot[1]:6.2f}")
    return 0


def caches(det, image: np.ndarray, runs: int) -> tuple[np.ndarray, np.ndarray]:
    """Median (letterbox, postprocess) ms right after an inference and repeated at once."""
    import time

    from edge_yolo.runtime import processing

    meta = det.meta
    slot = np.empty((*det.imgsz, 3), np.uint8)
    info = processing.letterbox_into(image, slot)
    blob = slot[None]

    def timed() -> tuple[float, float]:
        t0 = time.perf_counter()
        processing.letterbox_into(image, slot)
        t1 = time.perf_counter()
        processing.postprocess(box[0], cls[0], info, strides=tuple(meta.strides),
                               reg_max=meta.reg_max, conf=det.conf, iou=det.iou)
        return (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3

    cold, hot = [], []
    for i in range(runs + 10):
        box, cls = det.backend.infer(blob)
        first, again = timed(), timed()
        if i >= 10:
            cold.append(first)
            hot.append(again)
    return np.median(cold, axis=0), np.median(hot, axis=0)


if __name__ == "__main__":
    sys.exit(main())
