"""Pre-processing with and without the runtime taking the uint8 images, side by side.

For each bundle whose backend can take the letterboxed uint8 images (OpenVINO: normalized in
the graph by its pre-processing; TFLite INT8: pixel - 128 is the input), the same Detector is
timed alternately the old way (a float blob from ``processing.to_blob``, then quantized for
TFLite) and the new way, in one process, on a 1280x720 frame::

    .venv/bin/python benchmarks/bench_preprocess.py runs/bench/640/gelan-t-intel-int8 \\
        runs/bench/640/gelan-t-rpi-int8 --threads 2

Printed per bundle and way: median pre / infer / post / total (ms) and (pre + post) / infer.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=60)
    args = ap.parse_args(argv)

    from edge_yolo import Detector
    from edge_yolo.runtime.benchmark import frame

    image = frame(None)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
