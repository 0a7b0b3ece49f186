"""Does the camera loop keep up? Loop FPS against the Detector's own ceiling, latency over the
run, and memory over many frames.

Run by hand: ``.venv/bin/python benchmarks/bench_camera.py BUNDLE [BUNDLE ...] [--frames 10000]``.
For each bundle: a 640x480, 30 fps video file stands in for a camera (paced at its frame rate,
stale frames dropped, exactly as a live source), or, with ``--unpaced``, frames as fast as the
reader can decode. Printed per bundle: the Detector's ceiling (1000 / its median latency on one
frame), the loop's FPS and its ratio to min(ceiling, camera FPS), capture-to-result latency in
the first and last tenth of the run (flat means no queue builds up), dropped frames, and RSS
after warm-up (3,000 frames through the loop) and at the end. Each bundle runs synchronously
(one frame at a time) and with the backend's own asynchrony (OpenVINO: two infer requests in
flight), side by side. Targets: >= 90 % of the ceiling and RSS growth < 5 MB over 10,000
frames (issue 8); asynchronous throughput >= 1.3x synchronous at the same latency (issue 11).

``--camera-fps N`` stands in for a camera faster than the model: the video's frames are
decoded into memory first and served at N frames/s through the live path (a one-slot queue,
stale frames dropped), so the loop's throughput and its capture-to-result latency are the
model's and the loop's own, with no decoding on the reader thread and no backlog::

    .venv/bin/python benchmarks/bench_camera.py runs/bench/320/gelan-t-intel-int8 \
        --camera-fps 240 --frames 600 --warmup-frames 60
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from edge_yolo import Detector
from edge_yolo.runtime.stream import FrameReader, run_stream


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_video(path: Path, seconds: float, fps: float = 30.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 480))
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (480, 640, 3), np.uint8)
    for i in range(int(seconds * fps)):
        im = base.copy()
        cv2.circle(im, (100 + (i * 7) % 440, 240), 60, (0, 255, 255), -1)
        writer.write(im)
    writer.release()
    return path


class MemoryCamera:
    """A capture that serves decoded frames from memory at ``fps`` (a fast camera)."""

    def __init__(self, frames: list[np.ndarray], fps: float) -> None:
        self.frames, self.fps, self.index = frames, fps, 0

    def read(self) -> tuple[bool, np.ndarray]:
        self.index += 1
        return True, self.frames[self.index % len(self.frames)]

    def get(self, _prop: int) -> float:
        return self.fps

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return True

    def release(self) -> None:
        pass


def open_reader(video: Path, args: argparse.Namespace) -> FrameReader:
    if not args.camera_fps:
        return FrameReader(str(video), realtime=not args.unpaced)
    if not hasattr(args, "decoded"):
        cap, args.decoded = cv2.VideoCapture(str(video)), []
        while (frame := cap.read()[1]) is not None:
            args.decoded.append(frame)
    reader = FrameReader("0", realtime=True, log=lambda _: None,
                         opener=lambda _: MemoryCamera(args.decoded, args.camera_fps))
    reader.pace_s = 1.0 / args.camera_fps  # a camera index is live: pace it like the camera
    return reader


def measure(det: Detector, video: Path, args: argparse.Namespace, depth: int) -> dict:
    """The loop over ``args.frames`` frames with ``depth`` frames in flight, after warm-up."""
    # the stream's own warm-up (reader thread, decoder, the allocator's per-thread arenas)
    # before memory is compared: measured, OpenVINO's RSS settles within the first 3,000
    # frames and then stays flat (247.5 MB from 3,000 to 21,000 frames)
    warm = 0
    while warm < args.warmup_frames:
        warm += run_stream(det, open_reader(video, args),
                           max_frames=args.warmup_frames - warm, log=lambda _: None,
                           depth=depth).frames
    rss0 = rss_mb()
    done = dropped = 0
    latency: list[float] = []
    lat_first: list[float] = []
    lat_last: list[float] = []
    t_start = time.perf_counter()
    while done < args.frames:  # the 20 s file loops until enough frames are done
        reader = open_reader(video, args)
        out = {"video_out": video.with_name("out.mp4"),
               "jsonl_out": video.with_name("out.jsonl")} if args.write else {}
        stats = run_stream(det, reader, max_frames=args.frames - done, log=lambda _: None,
                           depth=depth, **out)
        if not lat_first:
            lat_first = stats.latency_ms[: max(1, len(stats.latency_ms) // 10)]
        lat_last = stats.latency_ms[-max(1, len(stats.latency_ms) // 10):]
        latency += stats.latency_ms
        done += stats.frames
        dropped += stats.dropped
    return {"fps": done / (time.perf_counter() - t_start), "frames": done, "dropped": dropped,
            "p50": float(np.median(latency)), "p90": float(np.percentile(latency, 90)),
            "first": float(np.median(lat_first)), "last": float(np.median(lat_last)),
            "rss0": rss0, "rss1": rss_mb()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--frames", type=int, default=3000, help="frames to process per bundle")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--unpaced", action="store_true", help="decode as fast as possible")
    ap.add_argument("--camera-fps", type=float, default=0,
                    help="a camera this fast instead of the file: frames from memory, live "
                         "drop semantics (see above)")
    ap.add_argument("--warmup-frames", type=int, default=3000,
                    help="frames through the loop before memory is compared")
    ap.add_argument("--write", action="store_true",
                    help="also draw and write the annotated video and the JSON-lines log, as "
                         "edge-yolo predict does on a stream")
    ap.add_argument("--depths", default="1,0",
                    help="frames in flight to compare: 1 = synchronous, 0 = the backend's own "
                         "(OpenVINO: asynchronous requests)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = make_video(Path(tmp) / "cam.mp4", seconds=20)
        for bundle in args.bundles:
            det = Detector(bundle, threads=args.threads)
            frame = cv2.VideoCapture(str(video)).read()[1]
            det.warmup(5)
            times = []
            for _ in range(30):
                t0 = time.perf_counter()
                det(frame)
                times.append(time.perf_counter() - t0)
            ceiling = 1 / float(np.median(times))
            bound = ceiling if args.unpaced else min(ceiling, args.camera_fps or 30.0)
            sync_fps = None
            for depth in (int(d) for d in args.depths.split(",")):
                r = measure(det, video, args, depth or det.backend.in_flight)
                mode = f"depth {depth or det.backend.in_flight}" + (" (sync)" if depth == 1 else "")
                ratio = "" if sync_fps is None else f", {r['fps'] / sync_fps:.2f}x sync"
                sync_fps = r["fps"] if depth == 1 else sync_fps
                print(f"{Path(bundle).name} {mode}: ceiling {ceiling:.1f} FPS, loop "
                      f"{r['fps']:.1f} FPS ({100 * r['fps'] / bound:.0f} % of {bound:.1f}"
                      f"{ratio}), latency p50 {r['p50']:.1f} p90 {r['p90']:.1f} ms "
                      f"(p50 first/last tenth {r['first']:.1f}/{r['last']:.1f}), "
                      f"{r['dropped']} dropped, RSS {r['rss0']:.1f} -> {r['rss1']:.1f} MB over "
                      f"{r['frames']} frames", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
