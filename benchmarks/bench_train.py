"""Training throughput on this CPU: gelan-t and yolov9-t side by side (run by hand).

    .venv/bin/python benchmarks/bench_train.py [--imgsz 320] [--batch 8] [--threads 2]
    .venv/bin/python benchmarks/bench_train.py --loop --baseline 0759472

Step mode (the default): each model in its own process (so its peak RSS is its own), a full
training step (forward_train, PGI loss, backward, gradient clipping, optimizer step, EMA
update) on batches from the real augmenting loader, prepared beforehand so the step itself is
timed, with its parts (forward, loss with the assigner, backward, optimizer + EMA) timed
apart; the loader's own rate (mosaic + affine + HSV in the main process) is printed beside
it. ``--amp`` runs the forward under bfloat16 autocast. Targets at 320 px, batch 8,
2 threads: gelan-t >= 7.2 images/s, yolov9-t >= 4.5 images/s.

Loop mode (``--loop``): images/s of the real training loop (``edge_yolo.train``) with its own
defaults for threads, loader workers and mixed precision, from the time between optimizer
steps, loading included. ``--baseline REF`` measures the same at another commit (a git
worktree) in the same run, alternating the two, and prints the ratio: issue 11 asks for
>= 1.3x the commit before the speed work.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

TARGETS = {"gelan-t": 7.2, "yolov9-t": 4.5}


def measure(
    name: str, imgsz: int, batch: int, threads: int, iters: int, channels_last: bool,
    amp: bool = False,
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

    parts = {"forward": [], "loss": [], "backward": [], "optimizer+ema": []}

    def step(x: torch.Tensor, t: torch.Tensor) -> None:
        t0 = time.perf_counter()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = model.forward_train(x)
        t1 = time.perf_counter()
        loss, _ = criterion(out, t)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model)
        t4 = time.perf_counter()
        for key, a, b in zip(parts, (t0, t1, t2, t3), (t1, t2, t3, t4)):
            parts[key].append(b - a)

    for x, t in batches[:2]:  # warm-up: allocator, kernel selection
        step(x, t)
    for values in parts.values():
        values.clear()
    times = []
    for x, t in batches[2:]:
        t0 = time.perf_counter()
        step(x, t)
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    return {
        "parts_ms": {k: 1e3 * sorted(v)[len(v) // 2] for k, v in parts.items()},
        "model": name,
        "images_per_s": batch / median,
        "threads": torch.get_num_threads(),
        "step_s_median": median,
        "step_s_min": times[0],
        "loader_images_per_s": load_rate,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure_loop(name: str, imgsz: int, batch: int, iters: int, workers: int | None,
                 amp: bool = False) -> dict:
    """images/s of ``edge_yolo.train`` itself: time between optimizer steps, loading included."""
    import tempfile

    import torch

    import edge_yolo
    from edge_yolo.train.config import load_recipe
    from edge_yolo.train.loop import train

    warm = 3
    values = dict(
        model=name, data=f"synthetic:{batch * (iters + warm + 1)}", epochs=1, imgsz=imgsz,
        batch=batch, nbs=batch, eval_interval=0, progress=False, plots=False, seed=0,
    )
    if workers is not None:
        values["workers"] = workers
    if amp:
        values["amp"] = True
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        values["out"] = out
        train(load_recipe(None, values), on_step=lambda _n, _m: stamps.append(time.perf_counter()))
    steps = sorted(b - a for a, b in zip(stamps[warm:], stamps[warm + 1:]))
    median = steps[len(steps) // 2]
    return {
        "model": name,
        "images_per_s": batch / median,
        "mean_images_per_s": batch * len(steps) / sum(steps),
        "threads": torch.get_num_threads(),
        "code": str(Path(edge_yolo.__file__).parent.parent),
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
    p.add_argument("--amp", action="store_true",
                   help="bfloat16 autocast forward (loop mode: this tree only, against the "
                        "baseline's default)")
    p.add_argument("--loop", action="store_true",
                   help="measure the real training loop with its own defaults (threads, "
                        "workers, mixed precision)")
    p.add_argument("--workers", type=int, help="loop mode: loader workers (default: the loop's)")
    p.add_argument("--baseline", metavar="REF",
                   help="loop mode: also measure this git commit, alternating, and print ratios")
    p.add_argument("--rounds", type=int, default=2, help="loop mode: alternations per model")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one model, print JSON
    args = p.parse_args()
    if args.one:
        if args.loop:
            result = measure_loop(args.one, args.imgsz, args.batch, args.iters, args.workers,
                                  args.amp)
        else:
            result = measure(args.one, args.imgsz, args.batch, args.threads, args.iters,
                             args.channels_last, args.amp)
        print(json.dumps(result))
        return 0
    if args.loop:
        return compare_loop(args)

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
        if args.amp:
            cmd.append("--amp")
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
    print("median time of each part of a step (ms): the model's forward and backward should "
          "dominate, not the loss and its assigner")
    for r in rows:
        parts = r["parts_ms"]
        total = sum(parts.values())
        print(f"{r['model']:<10} " + "  ".join(
            f"{k} {v:.0f} ({v / total:.0%})" for k, v in parts.items()))
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


def compare_loop(args: argparse.Namespace) -> int:
    """The training loop here and (with --baseline) at another commit, alternating."""
    repo = Path(__file__).resolve().parents[1]
    trees = {"this tree": repo}
    worktree = None
    if args.baseline:
        import tempfile

        worktree = Path(tempfile.mkdtemp(prefix="bench-train-")) / "baseline"
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "-q",
                        str(worktree), args.baseline], check=True)
        trees[args.baseline] = worktree
    load = os.getloadavg()
    print(f"training loop, {args.imgsz} px, batch {args.batch}, loop defaults"
          f"{'' if args.workers is None else f', {args.workers} workers'}"
          f"{', this tree with --amp' if args.amp else ''}; "
          f"load average {load[0]:.1f} on {os.cpu_count()} CPUs")
    try:
        results: dict[tuple[str, str], list[dict]] = {}
        for name in args.models:
            for _ in range(args.rounds):
                for label, tree in trees.items():
                    cmd = [sys.executable, __file__, "--one", name, "--loop", "--imgsz",
                           str(args.imgsz), "--batch", str(args.batch), "--iters",
                           str(args.iters)]
                    if args.workers is not None:
                        cmd += ["--workers", str(args.workers)]
                    if args.amp and tree == repo:  # the baseline stays as it trains by default
                        cmd.append("--amp")
                    env = {**os.environ, "PYTHONPATH": str(tree)}
                    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    if done.returncode:
                        print(done.stderr[-3000:], file=sys.stderr)
                        return 1
                    row = json.loads(done.stdout.strip().splitlines()[-1])
                    assert Path(row["code"]).resolve() == tree.resolve(), row["code"]
                    results.setdefault((name, label), []).append(row)
    finally:
        if worktree is not None:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force",
                            str(worktree)], check=False)
    print(f"{'model':<10} {'code':<12} {'images/s':>9} {'mean':>7} {'threads':>8} {'ratio':>6}")
    for name in args.models:
        base = None
        if args.baseline:
            base = max(r["images_per_s"] for r in results[(name, args.baseline)])
        for label in trees:
            rows = results[(name, label)]
            best = max(r["images_per_s"] for r in rows)
            mean = max(r["mean_images_per_s"] for r in rows)
            ratio = f"{best / base:.2f}" if base else "-"
            print(f"{name:<10} {label:<12} {best:>9.2f} {mean:>7.2f} {rows[0]['threads']:>8} "
                  f"{ratio:>6}")
    print(f"load average after: {os.getloadavg()[0]:.1f} (best of {args.rounds} alternations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
