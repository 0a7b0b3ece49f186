"""Training throughput on this CPU: gelan-t and yolov9-t side by side (run by hand).

    .venv/bin/python benchmarks/bench_train.py [--imgsz 320] [--batch 8] [--threads 2]

Each model is measured in its own process (so its peak RSS is its own): a full training step
(forward_train, PGI loss, backward, gradient clipping, SGD step, EMA update) on batches from
the real augmenting loader, prepared beforehand so the step itself is timed; the loader's own
rate (mosaic + affine + HSV in the main process) is printed beside it. Targets at 320 px,
batch 8, 2 threads: gelan-t >= 7.2 images/s, yolov9-t >= 4.5 images/s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

TARGETS = {"gelan-t": 7.2, "yolov9-t": 4.5}


def measure(
    name: str, imgsz: int, batch: int, threads: int, iters: int, channels_last: bool
) -> dict:
    import torch

    from edge_yolo.data import load_dataset
    from edge_yolo.data.loader import DetectionLoader
    from edge_yolo.models import create_model
    from edge_yolo.train.ema import ModelEMA
    from edge_yolo.train.loss import build_loss
    from edge_yolo.train.optim import build_optimizer

    if threads:
        torch.set_num_threads(threads)
    else:  # as the training loop does when --threads is not given: one per free core
        from edge_yolo.train.cpu_share import CPUShare, threads_for

        share = CPUShare()
        time.sleep(0.3)
        torch.set_num_threads(threads_for(share.available(), share.cores))
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = build_loss(model)
    optimizer = build_optimizer(model, 0.01, 0.937, 5e-4)
    ema = ModelEMA(model)
    dataset = load_dataset(f"synthetic:{batch * (iters + 2)}", imgsz=imgsz)
    loader = DetectionLoader(dataset, imgsz, batch, augment=True, workers=0)
    t0 = time.perf_counter()
    batches = [(x, t) for x, t, _ in loader]
    load_rate = len(dataset) / (time.perf_counter() - t0)

    def step(x: torch.Tensor, t: torch.Tensor) -> None:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss, _ = criterion(model.forward_train(x), t)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model)

    for x, t in batches[:2]:  # warm-up: allocator, kernel selection
        step(x, t)
    times = []
    for x, t in batches[2:]:
        t0 = time.perf_counter()
        step(x, t)
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    return {
        "model": name,
        "images_per_s": batch / median,
        "threads": torch.get_num_threads(),
        "step_s_median": median,
        "step_s_min": times[0],
        "loader_images_per_s": load_rate,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads; 0: chosen as the training loop does (free cores)")
    p.add_argument("--iters", type=int, default=8, help="timed steps per model")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--models", nargs="+", default=list(TARGETS))
    p.add_argument("--busy", type=int, default=0,
                   help="competing processes that spin on a core each while steps are timed "
                        "(a busy machine)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment of the measured process (e.g. OMP_WAIT_POLICY=PASSIVE)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one model, print JSON
    args = p.parse_args()
    if args.one:
        result = measure(
            args.one, args.imgsz, args.batch, args.threads, args.iters, args.channels_last
        )
        print(json.dumps(result))
        return 0

    load = os.getloadavg()
    print(
        f"training step, {args.imgsz} px, batch {args.batch}, {args.threads} threads, "
        f"channels_last={args.channels_last}, {args.busy} busy processes, env {args.env}; "
        f"load average {load[0]:.1f} on {os.cpu_count()} CPUs"
    )
    env = {**os.environ, **dict(kv.split("=", 1) for kv in args.env)}
    spin = "import time\nwhile True: pass"
    busy = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(args.busy)]
    try:
        rows = measure_all(args, env)
    finally:
        for proc in busy:
            proc.kill()
    if rows is None:
        return 1
    return print_rows(rows)


def measure_all(args: argparse.Namespace, env: dict[str, str]) -> list[dict] | None:
    rows = []
    for name in args.models:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--imgsz",
            str(args.imgsz),
            "--batch",
            str(args.batch),
            "--threads",
            str(args.threads),
            "--iters",
            str(args.iters),
        ]
        if args.channels_last:
            cmd.append("--channels-last")
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        if done.returncode:
            print(done.stderr, file=sys.stderr)
            return None
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def print_rows(rows: list[dict]) -> int:
    print(
        f"{'model':<10} {'images/s':>9} {'target':>7} {'ratio':>6} {'step ms':>8} "
        f"{'min ms':>7} {'loader img/s':>13} {'peak RSS MiB':>13}"
    )
    for r in rows:
        target = TARGETS.get(r["model"])
        ratio = f"{r['images_per_s'] / target:.2f}" if target else "-"
        print(
            f"{r['model']:<10} {r['images_per_s']:>9.2f} {target or '-':>7} {ratio:>6} "
            f"{r['step_s_median'] * 1e3:>8.0f} {r['step_s_min'] * 1e3:>7.0f} "
            f"{r['loader_images_per_s']:>13.1f} {r['peak_rss_mib']:>13.0f}"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
