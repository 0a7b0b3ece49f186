"""Annotate a video file: every frame through the Detector, written as an mp4v .mp4.

    python examples/video_file.py --bundle gelan-t-intel-int8 --source street.mp4 --out out.mp4

OpenCV's pip wheels write MPEG-4 part 2 (mp4v) and MJPG; they have no H.264 encoder.
"""

from __future__ import annotations

import argparse
import time

import cv2

from edge_yolo import Detector


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", required=True, help="exported bundle directory or model file")
    p.add_argument("--source", required=True, help="input video file")
    p.add_argument("--out", required=True, help="output .mp4")
    p.add_argument("--threads", type=int, help="inference threads (default: all cores)")
    p.add_argument("--conf", type=float, default=0.25)
    args = p.parse_args()

    detector = Detector(args.bundle, threads=args.threads, conf=args.conf)
    cap = cv2.VideoCapture(args.source)
    if not cap.isOpened():
        raise SystemExit(f"video_file.py: cannot open {args.source}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    size = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise SystemExit(f"video_file.py: cannot write {args.out}")
    frames, infer_ms, t0 = 0, 0.0, time.perf_counter()
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            dets = detector(frame)
            writer.write(dets.draw(frame))
            frames += 1
            infer_ms += dets.timings["infer"]
    finally:
        cap.release()
        writer.release()
    dt = time.perf_counter() - t0
    if frames:
        print(
            f"{frames} frames -> {args.out}: {frames / dt:.1f} FPS end to end, "
            f"infer {infer_ms / frames:.1f} ms/frame"
        )
    else:
        raise SystemExit(f"video_file.py: no frames could be read from {args.source}")


if __name__ == "__main__":
    main()
