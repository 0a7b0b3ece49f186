"""Live detection from a camera: USB/CSI index, Picamera2, RTSP/HTTP URL or a GStreamer pipeline.

    python examples/camera.py --bundle gelan-t-rpi5-int8 --source 0
    python examples/camera.py --bundle gelan-t-rpi5-int8 --source picamera2
    python examples/camera.py --bundle gelan-t-jetson-orin-nano-fp16 --source "nvarguscamerasrc ! \
        video/x-raw(memory:NVMM),width=1280,height=720 ! nvvidconv ! video/x-raw,format=BGRx ! \
        videoconvert ! video/x-raw,format=BGR ! appsink drop=1" --headless --out cam.mp4

A thin script over :mod:`edge_yolo.runtime.stream`: frames are captured on their own thread
and the model always takes the newest one (stale frames are dropped and counted), a camera that
disconnects is reopened with backed-off retries, and Ctrl-C or SIGTERM prints a summary. It
shows a window with boxes and an FPS/latency overlay (q or Esc quits); ``--headless`` (or no
display) writes the annotated video and a JSON-lines log instead. The same loop is
``edge-yolo predict BUNDLE SOURCE``.
"""

from __future__ import annotations

import argparse

from edge_yolo import Detector
from edge_yolo.runtime.stream import FrameReader, run_stream


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", required=True, help="exported bundle directory or model file")
    p.add_argument("--source", default="0", help="camera index, picamera2, URL, pipeline or file")
    p.add_argument("--threads", type=int, help="inference threads (default: all cores)")
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--headless", action="store_true", help="no window")
    p.add_argument("--out", help="record the annotated stream to this .mp4")
    p.add_argument("--jsonl", help="write detections as JSON lines to this file")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: never)")
    p.add_argument("--realtime", action="store_true", help="pace a video file like a camera")
    args = p.parse_args()

    detector = Detector(args.bundle, threads=args.threads, conf=args.conf)
    detector.warmup()
    print(detector)
    reader = FrameReader(args.source, realtime=True if args.realtime else None)
    stats = run_stream(detector, reader, show=not args.headless, video_out=args.out,
                       jsonl_out=args.jsonl, max_frames=args.max_frames)
    print(stats.summary())


if __name__ == "__main__":
    main()
