"""The camera pipeline, headless, on video files the tests make: the newest frame wins and
stale ones are counted, a source that fails mid-stream is reopened, SIGTERM stops cleanly with
a summary, and ``edge-yolo predict`` drives it (JSON lines, annotated video)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import runtime_models as rm

from edge_yolo.cli import main
from edge_yolo.runtime.stream import (
    FrameReader,
    Retry,
    StreamError,
    StreamStats,
    open_capture,
    run_stream,
)


def make_video(path: Path, frames: int = 30, fps: float = 30.0, size=(160, 120)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(frames):
        im = np.full((size[1], size[0], 3), 40, np.uint8)
        cv2.rectangle(im, (10 + i, 20), (60 + i, 80), (0, 200, 255), -1)
        cv2.putText(im, str(i), (100, 100), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
        writer.write(im)
    writer.release()
    return path


class SlowDetector:
    """Stands in for a model that is slower than the camera (sleep, then no detections)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.seen = seconds, []

    def __call__(self, image):
        from edge_yolo.runtime.detector import Detections

        time.sleep(self.seconds)
        self.seen.append(image)
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                          np.zeros(0, np.int64), ["a"], image.shape[:2], {"infer": 1.0})

    def stream(self, items, *, image, depth=None):
        """What run_stream calls (Detector.stream's contract): results in order."""
        for item in items:
            yield item, self(image(item))


def test_a_file_is_read_whole_without_drops(tmp_path):
    video = make_video(tmp_path / "v.mp4", frames=20)
    det = SlowDetector(0.005)
    stats = run_stream(det, FrameReader(str(video)), log=lambda _: None)
    assert stats.frames == 20 and stats.dropped == 0 and stats.stopped_by == "end of stream"


def test_a_camera_faster_than_the_model_drops_stale_frames_and_latency_stays_flat(tmp_path):
    video = make_video(tmp_path / "v.mp4", frames=60, fps=60.0)
    det = SlowDetector(0.05)  # 20 FPS model, 60 FPS "camera"
    reader = FrameReader(str(video), realtime=True)
    stats = run_stream(det, reader, log=lambda _: None)
    assert stats.dropped > 20 and stats.frames + stats.dropped <= 60
    assert stats.frames >= 10
    # the result always belongs to a recent frame: no queue builds up
    first, last = np.median(stats.latency_ms[:5]), np.median(stats.latency_ms[-5:])
    assert last < first + 60 and max(stats.latency_ms) < 250


class FlakyCapture:
    """A live source that delivers ``ok`` frames, then fails; reopening fails ``down`` times."""

    opened = 0

    def __init__(self, ok: int) -> None:
        self.left = ok
        FlakyCapture.opened += 1

    def isOpened(self):  # noqa: N802
        return True

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        return True, np.zeros((48, 64, 3), np.uint8)

    def get(self, _):
        return 0.0

    def release(self):
        pass


def test_a_source_that_fails_mid_stream_is_reopened_with_backoff():
    attempts = {"n": 0}

    def opener(source):
        attempts["n"] += 1
        if attempts["n"] == 1:
            return FlakyCapture(ok=5)  # first open: 5 frames, then the camera "unplugs"
        if attempts["n"] <= 3:
            raise StreamError("cannot open video source 'camera 0'")  # still gone twice
        if attempts["n"] == 4:
            return FlakyCapture(ok=5)  # back
        raise StreamError("gone for good")

    said = []
    reader = FrameReader("0", opener=opener, retry=Retry(attempts=4, first_s=0.01, max_s=0.02),
                         log=said.append)
    with pytest.raises(StreamError, match="not reopened after 4 attempts"):
        run_stream(SlowDetector(0.0), reader, log=lambda _: None)
    assert reader.reconnects == 1 and reader.read_frames == 10
    assert any("reopening in" in s for s in said) and any("is back" in s for s in said)


class TerminatedAt(SlowDetector):
    """Calls the process's SIGTERM handler at its n-th frame, as the signal would: the loop's
    logic in this process (a real signal goes to a child process below)."""

    def __init__(self, n: int) -> None:
        super().__init__(0.0)
        self.n = n

    def __call__(self, image):
        if len(self.seen) + 1 == self.n:
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        return super().__call__(image)


def test_the_sigterm_handler_stops_the_loop_with_a_summary_and_is_put_back(tmp_path):
    video = make_video(tmp_path / "v.mp4", frames=200)
    reader = FrameReader(str(video))
    previous = signal.getsignal(signal.SIGTERM)
    stats = run_stream(TerminatedAt(5), reader, log=lambda _: None)
    assert signal.getsignal(signal.SIGTERM) == previous  # the handler is put back
    assert stats.stopped_by == "SIGTERM" and 5 <= stats.frames < 200
    assert "FPS" in stats.summary() and "p90" in stats.summary()
    assert not reader.is_alive()


@pytest.mark.slow
def test_predict_on_a_stream_exits_cleanly_on_a_real_sigterm(tmp_path, tmp_path_factory):
    """`kill <pid>` of a running camera loop: exit 0, the summary printed, the files closed."""
    bundle = rm.exported_bundle(rm.cache_root(tmp_path_factory), "onnx", "fp32")
    video = make_video(tmp_path / "cam.mp4", frames=900, size=(160, 120))  # 30 s at 30 FPS
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DISPLAY", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_yolo", "predict", str(bundle), str(video), "--realtime",
         "--threads", "1", "--out", str(out), "--save-jsonl", str(tmp_path / "d.jsonl")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        seen = []
        for line in proc.stdout:  # the loop logs a line a second once it runs
            seen.append(line)
            if line.startswith("frame "):
                break
        assert any(line.startswith("frame ") for line in seen), "".join(seen) + proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "(SIGTERM)" in rest
    summary = json.loads((out / "stream.json").read_text())
    assert summary["stopped_by"] == "SIGTERM" and 0 < summary["frames"] < 900
    lines = (tmp_path / "d.jsonl").read_text().splitlines()
    assert len(lines) == summary["frames"] and json.loads(lines[-1])["frame"] >= 0
    assert (out / "stream.mp4").stat().st_size > 0


def test_an_unopenable_source_is_named():
    with pytest.raises(StreamError, match="cannot open video source"):
        open_capture("/nonexistent/video.mp4")


def test_stats_summary_percentiles():
    s = StreamStats(frames=4, seconds=2.0, latency_ms=[10, 20, 30, 40])
    assert s.fps == 2.0 and s.to_dict()["latency_p50_ms"] == 25.0


def test_predict_runs_a_stream_headless_with_jsonl_and_video(tmp_path, tmp_path_factory,
                                                            capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    bundle = rm.exported_bundle(rm.cache_root(tmp_path_factory), "onnx", "fp32")
    video = make_video(tmp_path / "cam.mp4", frames=12, size=(160, 160))
    out, jsonl = tmp_path / "out", tmp_path / "d.jsonl"
    code = main(["predict", str(bundle), str(video), "--realtime", "--show", "--out", str(out),
                 "--save-jsonl", str(jsonl), "--threads", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "running headless" in captured.err and "frames in" in captured.out
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert lines and {"frame", "time", "detections", "image_shape"} <= set(lines[0])
    assert (out / "stream.mp4").stat().st_size > 0
    summary = json.loads((out / "stream.json").read_text())
    assert summary["frames"] == len(lines) and summary["frames"] + summary["dropped"] <= 12


def test_predict_takes_a_glob_and_refuses_a_missing_source(tmp_path, tmp_path_factory, capsys):
    bundle = rm.exported_bundle(rm.cache_root(tmp_path_factory), "onnx", "fp32")
    pattern = str(rm.RACCOON / "images" / "*.jpg")
    jsonl = tmp_path / "p.jsonl"
    assert main(["predict", str(bundle), pattern, "--save-jsonl", str(jsonl),
                 "--threads", "1"]) == 0
    assert len(jsonl.read_text().splitlines()) == len(rm.raccoon_photos())
    assert main(["predict", str(bundle), str(tmp_path / "nope.mp4")]) == 2
    assert "no such file, folder, camera or stream" in capsys.readouterr().err


def test_show_explains_why_it_runs_headless(monkeypatch):
    from edge_yolo.runtime.stream import display_problem

    headless_build = "  Video I/O:\n  GUI:                           NONE\n"
    gui_build = "  GUI:                           QT5\n    QT:   YES\n"
    monkeypatch.setenv("DISPLAY", ":0")
    assert "opencv-python-headless" in display_problem(headless_build)
    assert display_problem(gui_build) is None
    monkeypatch.delenv("DISPLAY")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert display_problem(gui_build) == "no display here (DISPLAY is not set)"
