"""QAT variants side by side (task / distillation / PGI dual loss) against PTQ, for one target.

Run by hand (about 10 minutes on 2 cores with the demo model):

    .venv/bin/python benchmarks/bench_qat.py --weights runs/demo/train/best.pt --data synthetic \\
        --target jetson --recipe recipes/qat-demo.yaml

Each variant is an ``edge-yolo qat`` run from the same float checkpoint with the same recipe and
calibration images; then one ``edge-yolo report`` scores the float model, the PTQ export, and
each QAT export (with its fake-quant torch row) on the same val images, with paired-bootstrap
intervals. The report's Markdown is copied to ``benchmarks/results/`` with the command and the
machine, so the numbers in a closing note can be traced to a run.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list[str]) -> None:
    print("$ edge-yolo " + " ".join(cmd), flush=True)
    subprocess.run([sys.executable, "-m", "edge_yolo", *cmd], check=True, cwd=REPO)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--data", required=True, help="data QAT trains on and the report scores")
    ap.add_argument("--target", default="jetson")
    ap.add_argument("--recipe", type=Path, default=REPO / "recipes" / "qat-demo.yaml")
    ap.add_argument("--variants", default="task,distill,pgi")
    ap.add_argument("--resamples", default="200")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench-qat")
    ap.add_argument("--results", type=Path, default=None,
                    help="markdown file (default benchmarks/results/qat-<target>-<data>.md)")
    args = ap.parse_args()
    qats = []
    for variant in args.variants.split(","):
        out = args.out / variant
        shutil.rmtree(out, ignore_errors=True)
        run(["qat", "--weights", str(args.weights), "--data", args.data, "--target", args.target,
             "--variant", variant, "--recipe", str(args.recipe), "--out", str(out),
             "--no-progress"])
        qats.append(str(out / "best.pt"))
    report = args.out / "report"
    cmd = ["report", "--weights", str(args.weights), "--data", args.data, "--targets",
           args.target, "--precisions", "int8", "--qat", *qats, "--out", str(report),
           "--resamples", args.resamples]
    run(cmd)
    name = args.data.replace(":", "").replace("/", "_").strip("._")
    results = args.results or REPO / "benchmarks" / "results" / f"qat-{args.target}-{name}.md"
    results.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"<!-- {datetime.date.today()} on {platform.processor() or platform.machine()}; "
        f"benchmarks/bench_qat.py --weights {args.weights} --data {args.data} --target "
        f"{args.target} --recipe {args.recipe} --variants {args.variants} -->\n\n"
    )
    results.write_text(header + (report / "report.md").read_text())
    print(f"results: {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
