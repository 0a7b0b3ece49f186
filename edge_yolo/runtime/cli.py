"""``edge-yolo predict BUNDLE SOURCE``: run an artifact on an image, a folder or glob of images,
a video file, or a live source (camera index, RTSP/HTTP URL, GStreamer pipeline, ``picamera2``)
through the camera pipeline of :mod:`edge_yolo.runtime.stream`; print one line per image/frame
(once a second for a live source) and optionally write annotated copies and JSON lines.

Examples: ``edge-yolo predict gelan-t-rpi5-int8 photos/`` ·
``edge-yolo predict gelan-t-rpi5-int8 0 --show`` (camera 0) ·
``edge-yolo predict gelan-t-intel-int8 rtsp://cam/stream --out runs/cam --save-jsonl d.jsonl``

Device-safe: needs numpy, OpenCV and the bundle's runtime only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from edge_yolo.cli_args import (
    confidence,
    iou_threshold,
    output_dir,
    output_file,
    positive_int,
)
from edge_yolo.errors import UsageError
from edge_yolo.fileio import atomic_write_bytes
from edge_yolo.runtime.processing import IMAGE_SUFFIXES, VIDEO_SUFFIXES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle directory or model file (.onnx, .xml, .tflite, .pt, ...)")
    p.add_argument("source", help="an image, a folder or glob of images, a video file, a camera "
                                  "index, an RTSP/HTTP URL, a GStreamer pipeline or picamera2")
    p.add_argument(
        "--out", type=output_dir, help="write annotated images / video (and predictions.json) here"
    )
    p.add_argument("--conf", type=confidence, default=0.25,
                   help="confidence threshold (default 0.25)")
    p.add_argument("--iou", type=iou_threshold, default=0.45,
                   help="NMS IoU threshold (default 0.45)")
    p.add_argument("--max-det", type=positive_int, default=300, help="detections kept per image")
    p.add_argument("--threads", type=positive_int, help="inference threads (default: all cores)")
    p.add_argument("--device", help="runtime device, e.g. cpu, cuda, GPU (backend specific)")
    p.add_argument("--backend", help="run on this backend instead of the one the bundle names")
    p.add_argument("--show", action="store_true",
                   help="show each result in a window (q quits); headless without a display")
    p.add_argument("--save-jsonl", dest="save_jsonl", type=output_file,
                   help="write every frame's detections as JSON lines here")
    p.add_argument("--realtime", action="store_true",
                   help="treat a video file as a camera: paced at its frame rate, stale frames "
                        "dropped")
    p.add_argument("--max-frames", dest="max_frames", type=positive_int,
                   help="stop a stream after this many frames")
    p.add_argument("--no-check-files", dest="check_files", action="store_false",
                   help="skip the bundle's file checksums (storage verified another way)")


def image_files(folder: Path) -> list[Path]:
    """The images directly inside ``folder``, in name order."""
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def video_frames(path: Path) -> tuple[Iterator[np.ndarray], float, tuple[int, int]]:
    """Frames of a video file, its frame rate and ``(width, height)``; refuses unreadable files."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise UsageError(f"{path}: OpenCV cannot open this video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    size = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))

    def frames() -> Iterator[np.ndarray]:
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    return
                yield frame
        finally:
            cap.release()

    return frames(), fps, size


def write_image_atomic(path: Path, image: np.ndarray) -> None:
    """Encode with OpenCV (format from the suffix) and write atomically."""
    ok, data = cv2.imencode(path.suffix or ".jpg", image)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode an image as {path.suffix or '.jpg'}")
    atomic_write_bytes(path, data.tobytes())


def summary_line(name: str, dets: object) -> str:
    """``name: 2 raccoon, 1 dog (pre 1.1 ms, infer 9.8 ms, post 0.4 ms)``."""
    counts: dict[str, int] = {}
    for n in dets.labels:  # type: ignore[attr-defined]
        counts[n] = counts.get(n, 0) + 1
    what = ", ".join(f"{c} {n}" for n, c in counts.items()) or "no detections"
    t = dets.timings  # type: ignore[attr-defined]
    ms = f"pre {t['pre']:.1f} ms, infer {t['infer']:.1f} ms, post {t['post']:.1f} ms"
    return f"{name}: {what} ({ms})"


def run(args: argparse.Namespace) -> int:
    import glob

    from edge_yolo.runtime import Detector, ImageError
    from edge_yolo.runtime.stream import display_problem, is_live

    text = str(args.source)
    live = is_live(text) or (args.realtime and Path(text).suffix.lower() in VIDEO_SUFFIXES)
    source = Path(text)
    files = None
    if not live:
        if any(c in text for c in "*?["):
            files = sorted(Path(f) for f in glob.glob(text)
                           if Path(f).suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise UsageError(f"{text}: no images match")
        elif not source.exists():
            raise UsageError(f"{text}: no such file, folder, camera or stream")
        elif source.is_dir():
            files = image_files(source)
            if not files:
                raise UsageError(f"{source}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if args.show and (problem := display_problem()):
        print(f"{problem}: running headless", file=sys.stderr)
        args.show = False
    given = ("device", "threads", "conf", "iou", "max_det", "backend", "check_files")
    detector = Detector(args.bundle, **{k: getattr(args, k) for k in given})
    print(detector)
    if live:
        return _run_stream(detector, text, args)
    if files:
        return _run_images(detector, files, args, ImageError)
    if source.suffix.lower() in VIDEO_SUFFIXES:
        return _run_video(detector, source, args)
    return _run_images(detector, [source], args, ImageError)


def _run_stream(detector, source: str, args: argparse.Namespace) -> int:
    from edge_yolo.runtime.stream import FrameReader, StreamError, run_stream

    try:
        reader = FrameReader(source, realtime=True if args.realtime else None,
                             log=lambda line: print(line, file=sys.stderr, flush=True))
    except StreamError as e:
        raise UsageError(str(e)) from None
    video = None
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        video = args.out / "stream.mp4"
    detector.warmup()
    stats = run_stream(detector, reader, show=args.show, video_out=video,
                       jsonl_out=args.save_jsonl, max_frames=args.max_frames or 0)
    print(stats.summary())
    if args.out:
        _write_json(args.out / "stream.json", stats.to_dict())
    return 0 if stats.frames else 1


def _run_images(detector, files: list[Path], args: argparse.Namespace, image_error: type) -> int:
    from edge_yolo.runtime import processing

    failed = 0
    records: dict[str, dict] = {}
    jsonl = open(args.save_jsonl, "w") if args.save_jsonl else None  # noqa: SIM115
    try:
        for f in files:
            try:
                image = processing.read_image(str(f))
                dets = detector(image)
            except image_error as e:
                reason = str(e).removeprefix(f"{f}: ").removeprefix("image 0: ")
                print(f"{f}: skipped ({reason})", file=sys.stderr)
                records[f.name] = {"error": reason}
                failed += 1
                continue
            print(summary_line(str(f), dets))
            records[f.name] = dets.to_dict()
            if jsonl is not None:
                jsonl.write(json.dumps({"image": str(f), **records[f.name]}) + "\n")
            drawn = dets.draw(image) if args.out or args.show else None
            if args.out:
                write_image_atomic(args.out / f.name, drawn)
            if args.show and _show(drawn, wait_ms=0):
                break
    finally:  # whatever stopped the loop, what was predicted is kept
        if jsonl is not None:
            jsonl.close()
        if args.out:
            _write_json(args.out / "predictions.json", records)
    return 1 if failed else 0


def _run_video(detector, path: Path, args: argparse.Namespace) -> int:
    frames, fps, size = video_frames(path)
    writer, tmp, target = None, None, None
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        # OpenCV's pip wheels write MPEG-4 part 2 (mp4v) in .mp4 but no H.264.
        target = args.out / f"{path.stem}.mp4"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".mp4", dir=args.out)
        os.close(fd)
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not writer.isOpened():
            Path(tmp).unlink(missing_ok=True)
            raise UsageError(f"cannot write {target} (mp4v)")
    records, n, t0 = {}, 0, time.perf_counter()
    jsonl = open(args.save_jsonl, "w") if args.save_jsonl else None  # noqa: SIM115
    try:
        # through stream(): the runtime infers the next frames while this one is written
        for n, (frame, dets) in enumerate(detector.stream(frames), 1):  # noqa: B007
            print(summary_line(f"{path.name} frame {n}", dets))
            records[str(n)] = dets.to_dict()
            if jsonl is not None:
                jsonl.write(json.dumps({"frame": n, **records[str(n)]}) + "\n")
            if writer is not None or args.show:
                drawn = dets.draw(frame)
                if writer is not None:
                    writer.write(drawn)
                if args.show and _show(drawn, wait_ms=1):
                    break
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        if jsonl is not None:
            jsonl.close()
        frames.close()  # releases the capture even when the loop stopped early
        if writer is not None:
            writer.release()
    if n == 0:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise UsageError(f"{path}: no frames could be read")
    if writer is not None:
        os.replace(tmp, target)
        _write_json(args.out / "predictions.json", records)
    dt = time.perf_counter() - t0
    print(f"{path.name}: {n} frames in {dt:.1f} s ({n / dt:.1f} FPS end to end)")
    return 0


def _show(image: np.ndarray, wait_ms: int) -> bool:
    """Show a frame; True when the user pressed q or Esc."""
    cv2.imshow("edge-yolo", image)
    return (cv2.waitKey(wait_ms) & 0xFF) in (ord("q"), 27)


def _write_json(path: Path, data: dict) -> None:
    from edge_yolo.runtime.bundle import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1) + "\n")
