"""Live detection from a camera: USB/CSI index, RTSP/HTTP URL or a GStreamer pipeline.

    python examples/camera.py --bundle gelan-t-rpi-int8 --source 0
    python examples/camera.py --bundle gelan-t-jetson-fp16 --source "nvarguscamerasrc ! \
        video/x-raw(memory:NVMM),width=1280,height=720 ! nvvidconv ! video/x-raw,format=BGRx ! \
        videoconvert ! video/x-raw,format=BGR ! appsink drop=1" --headless --out cam.mp4

Shows a window with boxes and an FPS overlay (q or Esc quits); ``--headless`` runs without a
display (on a board over SSH), printing one line per second and optionally recording.
"""

from __future__ import annotations

import argparse
import time

import cv2

from edge_yolo import Detector


def open_source(source: str) -> cv2.VideoCapture:
    """A digit is a camera index; a string with '!' is a GStreamer pipeline; else a URL/file."""
    if source.isdigit():
        cap = cv2.VideoCapture(int(source))
    elif "!" in source:
        cap = cv2.VideoCapture(source, cv2.CAP_GSTREAMER)
    else:
        cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise SystemExit(f"camera.py: cannot open video source {source!r}")
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep latency low: always process the newest frame
    return cap


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", required=True, help="exported bundle directory or model file")
    p.add_argument("--source", default="0", help="camera index, URL or GStreamer pipeline")
    p.add_argument("--threads", type=int, help="inference threads (default: all cores)")
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--headless", action="store_true", help="no window (print stats instead)")
    p.add_argument("--out", help="record the annotated stream to this .mp4 (mp4v)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: never)")
    args = p.parse_args()

    detector = Detector(args.bundle, threads=args.threads, conf=args.conf)
    detector.warmup()
    print(detector)
    cap = open_source(args.source)
    writer = None
    fps, frames, last_print = 0.0, 0, time.perf_counter()
    try:
        while True:
            t0 = time.perf_counter()
            ok, frame = cap.read()
            if not ok:
                break
            dets = detector(frame)
            drawn = dets.draw(frame)
            dt = time.perf_counter() - t0
            fps = 1 / dt if fps == 0 else 0.9 * fps + 0.1 / dt  # smoothed, so it is readable
            label = f"{fps:.1f} FPS  infer {dets.timings['infer']:.0f} ms  {len(dets)} objects"
            cv2.putText(drawn, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 255, 0), 2)
            if args.out:
                if writer is None:
                    h, w = drawn.shape[:2]
                    writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"mp4v"), 30, (w, h))
                writer.write(drawn)
            frames += 1
            if args.headless:
                if time.perf_counter() - last_print >= 1.0:
                    print(label)
                    last_print = time.perf_counter()
            else:
                cv2.imshow("edge-yolo camera", drawn)
                if (cv2.waitKey(1) & 0xFF) in (ord("q"), 27):
                    break
            if args.max_frames and frames >= args.max_frames:
                break
    finally:
        cap.release()
        if writer is not None:
            writer.release()
        if not args.headless:
            cv2.destroyAllWindows()
    print(f"{frames} frames, {fps:.1f} FPS at the end")


if __name__ == "__main__":
    main()
