"""Which TFLite operators run outside XNNPACK, and what that costs (run by hand).

    .venv/bin/python benchmarks/bench_tflite_ops.py --weights runs/demo/train/best.pt --imgsz 640
    .venv/bin/python benchmarks/bench_tflite_ops.py --files a.tflite b.tflite

With ``--weights``: exports the checkpoint for the Raspberry Pi target in fp32 and int8 twice,
as edge-yolo exports it and with the original operators (``xnnpack_form`` off: AConv's average
pool and the neck's nearest upsample as they are in torch), then prints for each file the
operator counts, the XNNPACK partitions, the operators TFLite runs itself, and the median
inference time of the four files measured in turn in one run (same threads, same input).
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def export_pair(weights: str, imgsz: int, precision: str, out: Path, calib: str | None,
                calib_size: int) -> dict[str, Path]:
    """The bundle as shipped and the same export without :func:`xnnpack_form`."""
    import edge_yolo
    from edge_yolo.export import tflite

    files = {}
    options = dict(precision=precision, imgsz=imgsz, force=True, calib_size=calib_size)
    if calib:
        options["calib"] = calib
    shipped = edge_yolo.export(weights, "rpi", out=str(out / "shipped"), **options)
    files[f"{precision} shipped"] = shipped.path / shipped.meta.model_file
    original = tflite.xnnpack_form
    tflite.xnnpack_form = lambda model: model  # the operators as torch has them
    try:
        plain = edge_yolo.export(weights, "rpi", out=str(out / "original"), **options)
    finally:
        tflite.xnnpack_form = original
    files[f"{precision} original ops"] = plain.path / plain.meta.model_file
    return files


def describe(path: Path, threads: int) -> tuple[object, str]:
    from edge_yolo.runtime.backends.tflite import _interpreter_class, delegate_coverage

    interp = _interpreter_class()(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    partitions, outside = delegate_coverage(interp)
    counts = collections.Counter(op["op_name"] for op in interp._get_ops_details()
                                 if op["op_name"] != "DELEGATE")
    lines = [f"  {sum(counts.values())} operators in {partitions} XNNPACK partition(s); "
             f"{len(outside)} outside"]
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    for op in outside:
        x = tensors[next(i for i in op["inputs"] if i >= 0)]
        lines.append(f"    {op['op_name']:<24} {x['dtype'].__name__}{list(map(int, x['shape']))}")
    return interp, "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", help="checkpoint to export (fp32 and int8, both forms)")
    p.add_argument("--files", nargs="+", type=Path, help=".tflite files to compare instead")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--calib", help="calibration data (default: the checkpoint's dataset)")
    p.add_argument("--calib-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=40, help="timed inferences per file")
    args = p.parse_args()
    if not args.weights and not args.files:
        p.error("give --weights or --files")
    work = Path(tempfile.mkdtemp(prefix="bench-tflite-ops-"))
    files: dict[str, Path] = {}
    if args.weights:
        for precision in ("fp32", "int8"):
            files.update(export_pair(args.weights, args.imgsz, precision, work / precision,
                                     args.calib, args.calib_size))
    for f in args.files or []:
        files[f.name] = f

    interps = {}
    for label, path in files.items():
        interp, text = describe(path, args.threads)
        print(f"{label}: {path}\n{text}")
        detail = interp.get_input_details()[0]
        rng = np.random.default_rng(0)
        if np.issubdtype(detail["dtype"], np.integer):
            blob = rng.integers(-128, 128, detail["shape"]).astype(detail["dtype"])
        else:
            blob = rng.random(detail["shape"], dtype=np.float32)
        interp.set_tensor(detail["index"], blob)
        for _ in range(3):
            interp.invoke()
        interps[label] = interp
    times: dict[str, list[float]] = {label: [] for label in interps}
    for _ in range(args.runs):  # in turn, so drift in the machine's speed hits every file
        for label, interp in interps.items():
            t0 = time.perf_counter()
            interp.invoke()
            times[label].append(time.perf_counter() - t0)
    print(f"\ninference, {args.threads} threads, median of {args.runs} "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    medians = {label: statistics.median(t) for label, t in times.items()}
    for label, median in medians.items():
        base = medians.get(label.replace("shipped", "original ops"))
        ratio = f"  {base / median:.2f}x faster than the original operators" if (
            base and "shipped" in label) else ""
        print(f"  {label:<22} {median * 1e3:8.2f} ms{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
