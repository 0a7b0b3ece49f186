"""Where an OpenVINO bundle spends its inference time, layer by layer, run by hand.

The equivalent of ``benchmark_app -pc``: compile the bundle's IR the way the Detector does
(threads, latency hint, and the inference precision it asks for), run it ``--runs`` times
with performance counters on, and print per bundle

- the time per execution kernel type (``brgconv_avx512_amx_I8``, ``jit_avx512_FP32``, ...),
  so layers left in float and slow kernels show up;
- the time in ``Reorder`` nodes (layout or precision conversions between int8 and float);
- the slowest layers with their kernel and output precision.

Several bundles side by side (f32, bf16, int8 of one model), and ``--hint`` to try another
inference precision for the float layers of an int8 IR::

    python benchmarks/bench_ov_profile.py runs/bench/640/gelan-t-intel-{fp32,int8} --top 15
    python benchmarks/bench_ov_profile.py runs/bench/640/gelan-t-intel-int8 --hint f32 bf16
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

import numpy as np


def profile(xml: Path, hint: str, threads: int, runs: int) -> dict:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(xml))
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
              "INFERENCE_PRECISION_HINT": hint, "PERF_COUNT": True}
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    shape = [d.get_length() for d in model.inputs[0].get_partial_shape()]
    blob = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(5):
        request.infer({0: blob})
    by_kernel: collections.Counter[str] = collections.Counter()
    by_layer: collections.Counter[tuple[str, str, str]] = collections.Counter()
    wall = []
    for _ in range(runs):
        t0 = time.perf_counter()
        request.infer({0: blob})
        wall.append((time.perf_counter() - t0) * 1e3)
        for info in request.get_profiling_info():
            if info.status != info.Status.EXECUTED:
                continue
            ms = info.real_time.total_seconds() * 1e3
            by_kernel[f"{info.node_type}:{info.exec_type}"] += ms / runs
            by_layer[(info.node_name, info.node_type, info.exec_type)] += ms / runs
    return {"wall_ms": float(np.median(wall)), "kernels": by_kernel, "layers": by_layer,
            "sum_ms": sum(by_kernel.values())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--hint", nargs="+", default=None,
                    help="inference precisions to try (default: what the Detector asks for)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--top", type=int, default=12, help="slowest layers to list")
    args = ap.parse_args(argv)

    from edge_yolo.runtime.bundle import BundleMeta

    load = os.getloadavg()[0]
    print(f"# bench_ov_profile: threads={args.threads}, runs={args.runs}, load {load:.1f}")
    summary = []
    for bundle in args.bundles:
        meta = BundleMeta.read(bundle)
        xml = next(bundle.glob("*.xml"))
        hints = args.hint or ["bf16" if meta.precision == "bf16" else "f32"]
        for hint in hints:
            r = profile(xml, hint, args.threads, args.runs)
            title = f"{bundle.name} (hint {hint})"
            summary.append((title, r))
            print(f"\n## {title}: median {r['wall_ms']:.2f} ms per inference, "
                  f"{r['sum_ms']:.2f} ms in counted layers")
            print(f"{'node type:kernel':<48} {'ms':>8} {'share':>7}")
            for kernel, ms in r["kernels"].most_common():
                if ms >= 0.01:
                    print(f"{kernel:<48} {ms:>8.3f} {ms / r['sum_ms']:>7.1%}")
            reorder = sum(ms for k, ms in r["kernels"].items() if k.startswith("Reorder:"))
            print(f"reorders: {reorder:.3f} ms ({reorder / r['sum_ms']:.1%})")
            print(f"\nslowest {args.top} layers:")
            for (name, kind, kernel), ms in r["layers"].most_common(args.top):
                print(f"  {ms:7.3f} ms  {kind:<14} {kernel:<32} {name[:60]}")
    if len(summary) > 1:
        base_title, base = summary[0]
        print(f"\n# side by side (ratios vs {base_title})")
        for title, r in summary:
            print(f"{title:<48} {r['wall_ms']:8.2f} ms  x{base['wall_ms'] / r['wall_ms']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
