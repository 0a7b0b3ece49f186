"""A camera loop that never falls behind: capture in a thread, infer on the newest frame.

:class:`FrameReader` reads frames on its own thread into a one-slot queue. For a live source
(a camera index, an RTSP/HTTP URL, a GStreamer pipeline, Picamera2) a new frame replaces one
the model has not taken yet, and the replaced frame is counted as dropped: capture and
inference overlap, and the result always belongs to a recent frame, so latency cannot pile up
behind a slow model. A video file is read frame by frame without drops, unless it stands in
for a camera (``realtime=True``: paced at its own frame rate, dropping like a camera).

A live source that disconnects or stalls is reported and reopened with bounded, backed-off
retries (:class:`Retry`). :func:`run_stream` drives a :class:`~edge_yolo.runtime.Detector`
over a reader, through the runtime's asynchronous requests where it has them (the next frame
infers while this one is drawn and written): it draws boxes and an FPS/latency overlay, shows
a window or, headless, writes an annotated video and a JSON-lines log of detections, and stops
cleanly on Ctrl-C, SIGTERM, ``max_frames`` or the end of a file, returning
:class:`StreamStats` (frames, FPS, dropped frames, reconnects, capture-to-result latency
p50/p90).

Only numpy and OpenCV (Picamera2 when it is installed): this runs on the device.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: a source: camera index ("0"), file, URL, GStreamer pipeline (has "!") or "picamera2[:N]"
LIVE_PREFIXES = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "tcp://")


class StreamError(RuntimeError):
    """A source that cannot be opened (or reopened within the retries); names it."""


def describe_source(source: str) -> str:
    if source.isdigit():
        return f"camera {source}"
    if source.startswith("picamera2"):
        return "Picamera2 camera"
    if "!" in source:
        return "GStreamer pipeline"
    return source


def is_live(source: str) -> bool:
    """Cameras, network streams and pipelines are live (drop stale frames, reconnect);
    a file is not."""
    return (source.isdigit() or source.startswith("picamera2") or "!" in source
            or source.lower().startswith(LIVE_PREFIXES))


class _Picamera2Capture:
    """Picamera2 (the Raspberry Pi camera stack) behind OpenCV's ``read()``/``release()``."""

    def __init__(self, index: int) -> None:
        from picamera2 import Picamera2  # only on a Raspberry Pi

        self.cam = Picamera2(index)
        self.cam.configure(self.cam.create_video_configuration(main={"format": "BGR888"}))
        self.cam.start()

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        try:
            return True, self.cam.capture_array()
        except Exception:  # the camera went away
            return False, None

    def get(self, _prop: int) -> float:
        return 0.0

    def release(self) -> None:
        with contextlib.suppress(Exception):
            self.cam.stop()
            self.cam.close()


def open_capture(source: str) -> Any:
    """An opened capture for ``source``, or :class:`StreamError` saying which source failed."""
    import cv2

    if source.startswith("picamera2"):
        _, _, index = source.partition(":")
        try:
            return _Picamera2Capture(int(index or 0))
        except ImportError:
            raise StreamError("picamera2 is not installed (sudo apt install python3-picamera2 on "
                              "Raspberry Pi OS)") from None
    if source.isdigit():
        cap = cv2.VideoCapture(int(source))
    elif "!" in source:
        cap = cv2.VideoCapture(source, cv2.CAP_GSTREAMER)
    else:
        cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        cap.release()
        raise StreamError(f"cannot open video source {describe_source(source)!r}")
    with contextlib.suppress(Exception):
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a driver backlog
    return cap


@dataclass(frozen=True)
class Retry:
    """Reopening a lost live source: ``attempts`` tries, waits doubling from ``first_s`` up to
    ``max_s``; a source that returns no frame for ``stall_s`` counts as lost."""

    attempts: int = 5
    first_s: float = 0.5
    max_s: float = 8.0
    stall_s: float = 5.0

    def waits(self) -> Iterator[float]:
        wait = self.first_s
        for _ in range(self.attempts):
            yield wait
            wait = min(2 * wait, self.max_s)


@dataclass
class Frame:
    index: int  # frame number from the source (counting dropped ones)
    captured: float  # time.perf_counter() when read
    image: np.ndarray


class FrameReader(threading.Thread):
    """Reads ``source`` on its own thread; :meth:`get` returns the newest frame (live) or the
    next one (file). ``opener`` makes a capture (tests give a failing one)."""

    def __init__(
        self,
        source: str,
        *,
        realtime: bool | None = None,
        retry: Retry = Retry(),
        opener: Callable[[str], Any] = open_capture,
        log: Callable[[str], None] = print,
    ) -> None:
        super().__init__(daemon=True, name="edge-yolo-reader")
        self.source = source
        self.live = is_live(source) if realtime is None else realtime
        self.retry, self.opener, self.log = retry, opener, log
        self.queue: queue.Queue[Frame | None] = queue.Queue(maxsize=1 if self.live else 4)
        self.stop_event = threading.Event()
        self.dropped = 0
        self.reconnects = 0
        self.read_frames = 0
        self.error: BaseException | None = None
        self.cap = opener(source)  # fail now, in the caller's thread, if it cannot open
        fps = 0.0
        with contextlib.suppress(Exception):
            import cv2

            fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps < 1000 else 0.0
        # a file standing in for a camera is paced at its own rate
        self.pace_s = 1.0 / self.fps if self.live and not is_live(source) and self.fps else 0.0

    # -- reader thread ---------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # handed to the consumer
            self.error = e
        finally:
            with contextlib.suppress(Exception):
                self.cap.release()
            self._put(None)  # end of stream

    def _loop(self) -> None:
        next_at = time.perf_counter()
        index = 0
        while not self.stop_event.is_set():
            if self.pace_s:
                next_at += self.pace_s
                time.sleep(max(0.0, next_at - time.perf_counter()))
            t_read = time.perf_counter()
            ok, image = self.cap.read()
            if not ok or image is None:
                if not is_live(self.source):
                    return  # the end of a file
                stalled = time.perf_counter() - t_read
                why = "stalled" if stalled >= self.retry.stall_s else "returned no frame"
                self._reopen(why)
                next_at = time.perf_counter()
                continue
            self.read_frames += 1
            self._put(Frame(index, time.perf_counter(), image))
            index += 1

    def _reopen(self, why: str) -> None:
        name = describe_source(self.source)
        with contextlib.suppress(Exception):
            self.cap.release()
        for attempt, wait in enumerate(self.retry.waits(), 1):
            self.log(f"{name} {why}; reopening in {wait:.1f} s "
                     f"(attempt {attempt}/{self.retry.attempts})")
            if self.stop_event.wait(wait):
                return
            try:
                self.cap = self.opener(self.source)
            except StreamError:
                continue
            self.reconnects += 1
            self.log(f"{name} is back")
            return
        raise StreamError(f"{name} is gone: not reopened after {self.retry.attempts} attempts")

    def _put(self, frame: Frame | None) -> None:
        if self.live:
            while True:  # replace what the model has not taken: it is stale now
                try:
                    self.queue.put_nowait(frame)
                    return
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        old = self.queue.get_nowait()
                        if old is not None:
                            self.dropped += 1
        else:
            while not self.stop_event.is_set():
                with contextlib.suppress(queue.Full):
                    self.queue.put(frame, timeout=0.1)
                    return

    # -- consumer side ---------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame to process; None at the end (the reader's error is raised)."""
        frame = self.queue.get(timeout=timeout)
        if frame is None and self.error is not None:
            raise self.error
        return frame

    def stop(self) -> None:
        self.stop_event.set()


@dataclass
class StreamStats:
    """What a run did; ``latency_ms``: capture to result, per processed frame."""

    frames: int = 0
    dropped: int = 0
    reconnects: int = 0
    seconds: float = 0.0
    latency_ms: list[float] = field(default_factory=list)
    infer_ms: list[float] = field(default_factory=list)
    stopped_by: str = "end of stream"

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latency_ms, q)) if self.latency_ms else float("nan")

    def summary(self) -> str:
        return (f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} FPS), "
                f"{self.dropped} dropped, {self.reconnects} reconnects; latency capture->result "
                f"p50 {self.percentile(50):.1f} ms, p90 {self.percentile(90):.1f} ms "
                f"({self.stopped_by})")

    def to_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "dropped": self.dropped, "reconnects": self.reconnects,
                "seconds": round(self.seconds, 3), "fps": round(self.fps, 2),
                "latency_p50_ms": round(self.percentile(50), 2),
                "latency_p90_ms": round(self.percentile(90), 2), "stopped_by": self.stopped_by}


def display_problem(build_information: str | None = None) -> str | None:
    """Why no window can open here, or None: on Linux a display server must be named, and
    OpenCV must be built with a GUI (``opencv-python-headless`` has none)."""
    if build_information is None:
        import cv2

        build_information = cv2.getBuildInformation()
    for line in build_information.splitlines():
        if line.strip().startswith("GUI:") and line.split(":", 1)[1].strip().upper() == "NONE":
            return "this OpenCV has no GUI (opencv-python-headless)"
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return "no display here (DISPLAY is not set)"
    return None


def run_stream(
    detector: Any,
    reader: FrameReader,
    *,
    show: bool = False,
    video_out: str | os.PathLike | None = None,
    jsonl_out: str | os.PathLike | None = None,
    max_frames: int = 0,
    log: Callable[[str], None] = print,
    log_every_s: float = 1.0,
    depth: int | None = None,
) -> StreamStats:
    """Detect on every frame the reader hands over until the stream ends, ``max_frames``,
    q/Esc in the window, Ctrl-C or SIGTERM; the stats of the run.

    Frames go through :meth:`Detector.stream`: where the runtime has asynchronous requests
    (OpenVINO), the next frame infers while this one is drawn and written (``depth`` frames in
    flight; default the backend's, 1 runs them one at a time)."""
    import cv2

    stats = StreamStats()
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        def on_term(_sig: int, _frame: Any) -> None:
            stats.stopped_by = "SIGTERM"
            stop.set()

        previous = signal.signal(signal.SIGTERM, on_term)
    if show and (problem := display_problem()):
        log(f"{problem}: running headless")
        show = False
    writer = None
    jsonl = open(jsonl_out, "w") if jsonl_out else None  # noqa: SIM115 - closed below
    reader.start()
    t0 = last_log = time.perf_counter()
    fps_smooth = 0.0

    def frames() -> Iterator[Frame]:
        while not stop.is_set():
            try:
                frame = reader.get(timeout=0.2)
            except queue.Empty:
                continue
            if frame is None:
                return
            yield frame

    results = detector.stream(frames(), image=lambda frame: frame.image, depth=depth)
    try:
        for frame, dets in results:
            done = time.perf_counter()
            latency = (done - frame.captured) * 1e3
            stats.frames += 1
            stats.latency_ms.append(latency)
            stats.infer_ms.append(float(dets.timings.get("infer", 0.0)))
            instant = stats.frames / (done - t0) if done > t0 else 0.0
            fps_smooth = instant if fps_smooth == 0 else 0.9 * fps_smooth + 0.1 * instant
            if jsonl is not None:
                jsonl.write(json.dumps({"frame": frame.index, "time": round(done - t0, 4),
                                        **dets.to_dict()}) + "\n")
            if show or video_out:
                drawn = dets.draw(frame.image)
                label = (f"{fps_smooth:.1f} FPS  latency {latency:.0f} ms  {len(dets)} objects"
                         f"  dropped {reader.dropped}")
                cv2.putText(drawn, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 0), 2)
                if video_out:
                    if writer is None:
                        h, w = drawn.shape[:2]
                        fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                        writer = cv2.VideoWriter(str(video_out), fourcc, reader.fps or 30.0, (w, h))
                    writer.write(drawn)
                if show:
                    cv2.imshow("edge-yolo", drawn)
                    if (cv2.waitKey(1) & 0xFF) in (ord("q"), 27):
                        stats.stopped_by = "q pressed"
                        break
            if done - last_log >= log_every_s and not show:
                log(f"frame {frame.index}: {len(dets)} objects, {fps_smooth:.1f} FPS, latency "
                    f"{latency:.0f} ms, dropped {reader.dropped}")
                last_log = done
            if max_frames and stats.frames >= max_frames:
                stats.stopped_by = f"{max_frames} frames"
                break
    except KeyboardInterrupt:
        stats.stopped_by = "Ctrl-C"
    finally:
        results.close()  # requests still in flight finish before the reader stops
        reader.stop()
        stats.seconds = time.perf_counter() - t0
        stats.dropped, stats.reconnects = reader.dropped, reader.reconnects
        reader.join(timeout=5)
        if writer is not None:
            writer.release()
        if jsonl is not None:
            jsonl.close()
        if show:
            with contextlib.suppress(Exception):
                cv2.destroyAllWindows()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return stats


def open_reader(source: str | Path, **kwargs: Any) -> FrameReader:
    return FrameReader(str(source), **kwargs)
