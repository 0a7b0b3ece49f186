"""How big each device install is, and how fast ``from edge_yolo import Detector`` starts.

Run by hand (it downloads the runtimes from the package registry)::

    .venv/bin/python benchmarks/bench_install.py                 # tflite, openvino, onnx
    .venv/bin/python benchmarks/bench_install.py --extras tflite \
        --bundle runs/bench/320/gelan-t-rpi-int8

For each extra: build this repository's wheel, make a fresh virtual environment, install
``edge-yolo[EXTRA]`` from the wheel (no cache, so the sizes are what a device downloads and
unpacks), then print the environment's installed size (its ``site-packages``, and the
largest packages in it), that torch and the rest of the host stack are absent, and the cold
start: the median wall time of fresh interpreters running ``from edge_yolo import Detector``
and, with ``--bundle``, ``Detector(bundle)`` too. Target (edge-yolo issue 8): the
``[tflite]`` environment <= 330 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOST_ONLY = ("torch", "nncf", "onnx", "tensorflow", "litert_torch", "ai_edge_quantizer")
TFLITE_LIMIT_MB = 330


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def cold_start(python: Path, code: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([str(python), "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--extras", nargs="+", default=["tflite", "openvino", "onnx"])
    ap.add_argument("--bundle", type=Path, action="append", default=[],
                    help="also time loading this bundle (its backend must be installed)")
    ap.add_argument("--runs", type=int, default=5, help="fresh interpreters per timing")
    ap.add_argument("--headless", action="store_true",
                    help="swap opencv-python for opencv-python-headless after installing, as "
                         "the README advises for boards without a display")
    args = ap.parse_args(argv)

    ok = True
    with tempfile.TemporaryDirectory(prefix="bench_install.") as tmp:
        work = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w",
                        str(work), str(REPO)], check=True)
        (wheel,) = work.glob("edge_yolo-*.whl")
        baseline = None
        rows = []
        for extra in ["none", *args.extras]:
            env = work / f"env-{extra}"
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
            python = env / "bin" / "python"
            spec = f"{wheel}[{extra}]" if extra != "none" else str(wheel)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                            "--quiet", "--no-cache-dir", "--disable-pip-version-check", spec],
                           check=True)
            if args.headless:
                pip = [sys.executable, "-m", "pip", "--python", str(python)]
                subprocess.run([*pip, "uninstall", "--quiet", "-y", "opencv-python"], check=True)
                subprocess.run([*pip, "install", "--quiet", "--no-cache-dir",
                                "--disable-pip-version-check", "opencv-python-headless"],
                               check=True)
            install_s = time.perf_counter() - t0
            (site,) = env.glob("lib/python*/site-packages")
            size = du(site)
            packages = sorted(((du(p), p.name) for p in site.iterdir() if p.is_dir()),
                              reverse=True)[:4]
            present = [m for m in HOST_ONLY if (site / m).exists()]
            ok &= not present
            importing = cold_start(python, "from edge_yolo import Detector", args.runs)
            python_alone = cold_start(python, "pass", args.runs)
            loads = {}
            for bundle in args.bundle:
                code = f"from edge_yolo import Detector; Detector({str(bundle.resolve())!r})"
                # a bundle whose runtime is not in this environment fails: no row
                with contextlib.suppress(subprocess.CalledProcessError):
                    loads[bundle.name] = cold_start(python, code, args.runs)
            if extra == "none":
                baseline = size
            rows.append((extra, size, install_s, importing, python_alone, loads, packages,
                         present))
        print(f"# bench_install: Python {sys.version.split()[0]}, {sys.platform}, wheel "
              f"{wheel.name}{', OpenCV headless' if args.headless else ''}; cold starts are "
              f"medians of {args.runs} fresh interpreters")
        print(f"{'extra':<10} {'site-packages MB':>17} {'install s':>10} {'import s':>9} "
              f"{'(python alone)':>15}  largest packages")
        for extra, size, install_s, importing, alone, loads, packages, present in rows:
            big = ", ".join(f"{name} {b / 1e6:.0f}" for b, name in packages)
            print(f"{extra:<10} {size / 1e6:>17.1f} {install_s:>10.1f} {importing:>9.3f} "
                  f"{alone:>15.3f}  {big}")
            for name, seconds in loads.items():
                print(f"{'':<10} cold start to Detector({name}) loaded: {seconds:.3f} s")
            if present:
                print(f"{'':<10} HOST STACK PRESENT: {', '.join(present)}")
            if extra == "tflite":
                met = size / 1e6 <= TFLITE_LIMIT_MB
                ok &= met
                print(f"{'':<10} [tflite] {size / 1e6:.0f} MB (target <= {TFLITE_LIMIT_MB} MB): "
                      f"{'met' if met else 'MISSED'}")
        if baseline is not None:
            print(f"(the base install alone, numpy + OpenCV + PyYAML: {baseline / 1e6:.0f} MB)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
