"""``edge-yolo benchmark BUNDLE [BUNDLE...]``: how fast a bundle runs on this device.

Each bundle is measured in its own process (so its load time and peak memory are its own, not
the sum of everything loaded before it): load, warm-up, then ``--runs`` timed calls on a real
image or a synthetic frame. Reported per bundle: model load time, latency median / p90 / p99
and FPS end to end, the pre / infer / post split (medians), and peak resident memory. Several
bundles run side by side in one invocation, the way FP32 and INT8 (or two boards' exports)
are compared: all are loaded first, each in its own process, and their timed runs interleave
in rounds, so a machine whose speed drifts (a shared VM: the same f32 bundle measured 45 and
59 ms a minute apart) slows every bundle alike and the ratios between them hold. A table,
and JSON with ``--json``. Device-safe: numpy, OpenCV and the bundle's
runtime only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..cli_args import existing_path, non_negative_int, output_file, positive_int

STAGES = ("pre", "infer", "post", "total")


def frame(image: str | None, height: int = 720, width: int = 1280) -> np.ndarray:
    """The benchmark input: a real image, else a deterministic 720p synthetic scene."""
    from .processing import read_image

    if image:
        return read_image(image)
    rng = np.random.default_rng(0)
    scene = np.full((height, width, 3), 114, np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    scene[..., 0] = (xx * 200 // width).astype(np.uint8)
    scene[..., 1] = (yy * 200 // height).astype(np.uint8)
    for _ in range(8):  # a few filled rectangles: something for the post-processing to see
        x, y = int(rng.integers(0, width - 200)), int(rng.integers(0, height - 200))
        scene[y : y + int(rng.integers(40, 200)), x : x + int(rng.integers(40, 200))] = (
            rng.integers(0, 256, 3, dtype=np.uint8)
        )
    return scene


def _rss_mb() -> float:
    """Resident memory now (Linux ``/proc``; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def measure(
    bundle: str | os.PathLike,
    image: np.ndarray,
    *,
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    backend: str | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Load ``bundle`` and time ``runs`` calls on ``image`` after ``warmup`` untimed ones."""
    session = _Session(bundle, image, threads=threads, backend=backend, device=device)
    session.warm(warmup)
    session.timed(runs)
    return session.summary()


class _Session:
    """One loaded bundle being timed: its calls' stage times accumulate across rounds."""

    def __init__(self, bundle: str | os.PathLike, image: np.ndarray, *,
                 threads: int | None, backend: str | None, device: str | None) -> None:
        from .detector import Detector

        self.bundle, self.image, self.warmup, self.rounds = bundle, image, 0, 0
        self.rss0 = _rss_mb()
        t0 = time.perf_counter()
        self.detector = Detector(bundle, threads=threads, backend=backend, device=device)
        self.load_s = time.perf_counter() - t0
        self.stages: dict[str, list[float]] = {k: [] for k in STAGES}
        self.detections = 0

    def warm(self, runs: int) -> None:
        for _ in range(runs):
            self.detector(self.image)
        self.warmup += runs

    def timed(self, runs: int) -> None:
        self.rounds += 1
        for _ in range(runs):
            t = time.perf_counter()
            dets = self.detector(self.image)
            self.stages["total"].append((time.perf_counter() - t) * 1e3)
            for k in ("pre", "infer", "post"):
                self.stages[k].append(dets.timings[k])
            self.detections = len(dets)

    def summary(self) -> dict[str, Any]:
        detector, stages = self.detector, self.stages
        total = np.asarray(stages["total"])
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        return {
            "bundle": str(self.bundle),
            "detector": repr(detector),
            "precision": detector.meta.precision,
            "backend": detector.backend.name,
            "imgsz": list(detector.imgsz),
            "threads": detector.backend.threads,
            "runs": len(total),
            "rounds": self.rounds,
            "warmup": self.warmup,
            "load_s": round(self.load_s, 3),
            "ms": {k: round(float(np.median(v)), 3) for k, v in stages.items()},
            "p90_ms": round(float(np.percentile(total, 90)), 3),
            "p99_ms": round(float(np.percentile(total, 99)), 3),
            "fps": round(1e3 / float(np.median(total)), 2),
            "peak_rss_mb": round(peak_kb / 1e3, 1),
            "model_rss_mb": round(_rss_mb() - self.rss0, 1),
            "detections": self.detections,
        }


def table(results: list[dict[str, Any]]) -> str:
    head = (f"{'bundle':28s} {'backend':12s} {'prec':5s} {'load s':>6s} {'median':>7s} "
            f"{'p90':>7s} {'p99':>7s} {'FPS':>6s} {'pre':>6s} {'infer':>7s} {'post':>6s} "
            f"{'peak MB':>8s}")
    lines = [head]
    for r in results:
        ms = r["ms"]
        lines.append(
            f"{Path(r['bundle']).name[:28]:28s} {r['backend']:12s} {r['precision']:5s} "
            f"{r['load_s']:6.2f} {ms['total']:7.2f} {r['p90_ms']:7.2f} {r['p99_ms']:7.2f} "
            f"{r['fps']:6.1f} {ms['pre']:6.2f} {ms['infer']:7.2f} {ms['post']:6.2f} "
            f"{r['peak_rss_mb']:8.1f}"
        )
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Latency, FPS, load time and peak memory of bundles, side by side."
    p.add_argument("bundles", nargs="+", type=existing_path, help="bundle directories or files")
    p.add_argument("--image", type=existing_path,
                   help="image to run on (default: a 1280x720 synthetic frame)")
    p.add_argument("--runs", type=positive_int, default=50, help="timed runs (default 50)")
    p.add_argument("--rounds", type=positive_int, default=5,
                   help="with several bundles, their runs interleave in this many rounds, so a "
                        "change in the machine's speed hits all alike (default 5)")
    p.add_argument("--warmup", type=non_negative_int, default=5, help="untimed runs first")
    p.add_argument("--threads", type=positive_int, help="inference threads (default: all cores)")
    p.add_argument("--backend", help="run on this backend instead of the one each bundle names")
    p.add_argument("--device", help="runtime device (backend specific)")
    p.add_argument("--json", type=output_file, help="also write the results here as JSON")
    p.add_argument("--in-process", action="store_true",
                   help="measure every bundle in this process (peak memory then accumulates)")


_WORKER = (
    "import json, sys\n"
    "from edge_yolo.runtime.benchmark import serve\n"
    "serve(sys.argv[1], sys.argv[2] or None, json.loads(sys.argv[3]))\n"
)
_TAG = "edge-yolo-benchmark "  # marks the worker's protocol lines among a runtime's own output


def serve(bundle: str, image: str | None, options: dict[str, Any]) -> None:
    """A worker process: load ``bundle``, warm up, then time ``N`` calls for each line ``N``
    read from stdin; an empty line (or end of input) prints the summary and ends it."""
    warmup = options.pop("warmup")
    session = _Session(bundle, frame(image), **options)
    session.warm(warmup)
    print(_TAG + "ready", flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        session.timed(int(line))
        print(_TAG + "done", flush=True)
    print(_TAG + json.dumps(session.summary()), flush=True)


class _Worker:
    """One bundle loaded in its own interpreter, timed on request (see :func:`serve`)."""

    def __init__(self, bundle: Path, args: argparse.Namespace, backend: str | None,
                 log: Path) -> None:
        options = {"warmup": args.warmup, "threads": args.threads, "backend": backend,
                   "device": args.device}
        self.bundle, self.log = bundle, log
        with open(log, "wb") as err:  # a file, not a pipe: a chatty runtime cannot block it
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER, str(bundle), str(args.image or ""),
                 json.dumps(options)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
            )
        self.answer()  # loaded and warm

    def answer(self) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(_TAG):
                return line[len(_TAG):].strip()
        self.proc.wait()
        from ..errors import UsageError

        lines = self.log.read_text(errors="replace").strip().splitlines() or ["no output"]
        kind, _, message = lines[-1].partition(": ")
        raise UsageError(message if kind.endswith("Error") and message
                         else f"{self.bundle}: {lines[-1]}")

    def send(self, line: str) -> str:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:  # the worker died: answer() raises what it said last
            pass
        return self.answer()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


# OpenMP and onnxruntime threads spin for a while after a run; a pause between bundles keeps
# that tail off the next bundle's timings
_SETTLE_S = 0.05


def compare(
    bundles: list[Path], args: argparse.Namespace, backends: list[str | None] | None = None
) -> list[dict[str, Any]]:
    """Each bundle in its own interpreter (its load time and peak memory are its own), all
    loaded first, then timed in ``args.rounds`` interleaved rounds: drift in the machine's
    speed (other tenants, clocks) hits every bundle alike, so their ratios hold even where
    one bundle's figures move from run to run. With one bundle, one round. ``backends``
    names a backend per bundle (default: ``args.backend`` for all)."""
    backends = backends or [args.backend] * len(bundles)
    rounds = max(1, min(args.rounds, args.runs)) if len(bundles) > 1 else 1
    share = [args.runs // rounds + (r < args.runs % rounds) for r in range(rounds)]
    workers: list[_Worker] = []
    with tempfile.TemporaryDirectory(prefix="edge-yolo-benchmark.") as tmp:
        try:
            for i, (bundle, backend) in enumerate(zip(bundles, backends)):
                # loaded one at a time: load times uncontended
                workers.append(_Worker(bundle, args, backend, Path(tmp) / f"{i}.log"))
            for runs in share:
                for worker in workers:
                    time.sleep(_SETTLE_S)  # the last runtime's spinning threads go to sleep
                    worker.send(str(runs))
            return [json.loads(worker.send("")) for worker in workers]
        finally:
            for worker in workers:
                worker.close()


def run(args: argparse.Namespace) -> int:
    from ..fileio import atomic_write_text

    if args.in_process:
        image = frame(str(args.image) if args.image else None)
        results = [measure(b, image, runs=args.runs, warmup=args.warmup, threads=args.threads,
                           backend=args.backend, device=args.device) for b in args.bundles]
    else:
        results = compare(list(args.bundles), args)
    what = args.image or "a 1280x720 synthetic frame"
    rounds = " in interleaved rounds" if len(args.bundles) > 1 and not args.in_process else ""
    print(f"{platform.machine()} {platform.processor() or platform.system()}, {what}, "
          f"{args.runs} runs{rounds} after {args.warmup} warm-up; milliseconds unless stated")
    print(table(results))
    if args.json:
        atomic_write_text(args.json, json.dumps({"results": results}, indent=1) + "\n")
    return 0
