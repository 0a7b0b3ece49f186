"""What QAT's updates add, by variant, seed and schedule length: the study behind its defaults.

Run by hand (each run on 2 cores: ~0.75 s an update for yolov9-t at 224 px, batch 8, plus
a minute or two to quantize and score):

    .venv/bin/python benchmarks/bench_qat_study.py --weights runs/demo/train/best.pt \\
        --target jetson --variants pgi,task,distill --seeds 0,1,2 --updates 300 \\
        --out runs/qat-study [--extra "--batch 8"] [--write NAME]

Every cell is one ``edge-yolo qat`` run from the same float checkpoint; each run holds the
same share of its data out (seeded by its seed) and scores there, with the same bootstrap
resamples, its start (quantizers initialised, 0 updates: PTQ in torch) and its end. The
table gives, per variant and schedule, the mean over seeds of the held-out fidelity to the
float model at the start and the end, the change with the mean of its paired 95 % interval,
and the ground-truth mAP50-95 at the start and the end where there are labels. A run already
in OUT (its ``qat.json`` written) is read, not run again, so a study can be extended.
``--write NAME`` saves the table to ``benchmarks/results/NAME.md`` with this command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_one(args: argparse.Namespace, variant: str, seed: int, updates: int) -> dict:
    out = args.out / f"{variant}-s{seed}-u{updates}"
    if not (out / "qat.json").is_file():
        cmd = [sys.executable, "-m", "edge_yolo", "qat", "--weights", str(args.weights),
               "--target", args.target, "--variant", variant, "--seed", str(seed),
               "--updates", str(updates), "--out", str(out), "--exist-ok", "--no-progress",
               *(["--data", args.data] if args.data else []), *shlex.split(args.extra)]
        print("$ edge-yolo " + " ".join(cmd[3:]), flush=True)
        subprocess.run(cmd, check=True, cwd=REPO)
    return json.loads((out / "qat.json").read_text())


def mean(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--target", default="jetson")
    p.add_argument("--data", help="QAT data (default: the checkpoint's dataset)")
    p.add_argument("--variants", default="pgi,task,distill")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--updates", default="300", help="schedule lengths, comma-separated")
    p.add_argument("--extra", default="", help="more qat flags, e.g. \"--batch 8\"")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "qat-study")
    p.add_argument("--write", help="save the table as benchmarks/results/NAME.md")
    args = p.parse_args()
    rows = ["| variant | updates | seeds | held-out images | fidelity start | fidelity end | "
            "change [mean paired 95% CI] | mAP50-95 start | mAP50-95 end | float mAP50-95 |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for updates in (int(u) for u in args.updates.split(",")):
        for variant in args.variants.split(","):
            runs = [run_one(args, variant, int(s), updates) for s in args.seeds.split(",")]
            held = [r["holdout"] for r in runs]
            gains = [h["end"]["fidelity"] - h["init"]["fidelity"] for h in held]
            cis = [h["fidelity_gain_ci"] for h in held if "fidelity_gain_ci" in h]
            ci = (f" [{statistics.mean(c[0] for c in cis):+.2f}, "
                  f"{statistics.mean(c[1] for c in cis):+.2f}]") if cis else ""
            maps = {k: [100 * h[k]["map50_95"] for h in held if "map50_95" in h[k]]
                    for k in ("init", "end")}
            floats = [100 * h["init"]["float_map50_95"] for h in held
                      if "float_map50_95" in h["init"]]
            rows.append(
                f"| {variant} | {updates} | {len(runs)} | {held[0]['images']} | "
                f"{mean([h['init']['fidelity'] for h in held])} | "
                f"{mean([h['end']['fidelity'] for h in held])} | {mean(gains)}{ci} | "
                f"{mean(maps['init'])} | {mean(maps['end'])} | {mean(floats)} |")
    table = "\n".join(rows)
    print(table)
    if args.write:
        path = REPO / "benchmarks" / "results" / f"{args.write}.md"
        command = "benchmarks/bench_qat_study.py " + " ".join(shlex.quote(a)
                                                                for a in sys.argv[1:])
        cpu = platform.processor() or platform.machine()
        path.write_text(f"<!-- {datetime.date.today()} on {cpu}; {command} -->\n\n"
                        f"{table}\n")
        print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
