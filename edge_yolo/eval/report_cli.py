"""``edge-yolo report``: export what is asked (per target: float, INT8 PTQ with its fake-quant
torch row, INT8 QAT with its fake-quant torch row), score everything with
:func:`edge_yolo.eval.report.build_report`, write the three forms and gate on ``--max-drop``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..cli_args import existing_path, non_negative_int, output_dir, positive_float, positive_int
from .report import GATES, FakeQuant, build_report, fake_quant_ptq, gate, record_rows
from .report_render import markdown, write_report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Evaluate the float checkpoint and its exports on one dataset through one path: "
        "mAP, drop with a 95% interval, per-class deltas, size, latency, agreement."
    )
    p.add_argument("--weights", required=True, type=existing_path,
                   help="the float edge-yolo checkpoint (.pt): the baseline")
    p.add_argument("--data", required=True, help="dataset spec (data YAML, COCO, VOC, synthetic)")
    p.add_argument("--split", default="val", help="split to score on (default val)")
    p.add_argument("--targets", default="",
                   help="export these targets or boards now (comma-separated), e.g. intel,rpi")
    p.add_argument("--precisions", default="fp32,int8",
                   help="precisions exported per target (default fp32,int8)")
    p.add_argument("--qat", nargs="*", type=existing_path, default=[],
                   help="QAT checkpoints (edge-yolo qat): each is exported to its target and "
                        "scored, beside its fake-quantized torch row")
    p.add_argument("--bundles", nargs="*", type=existing_path, default=[],
                   help="bundles already exported, scored as they are")
    p.add_argument("--no-fake-quant", action="store_true",
                   help="skip the fake-quant torch rows beside each PTQ export")
    p.add_argument("--calib", help="calibration data for int8 (default: --data, train split)")
    p.add_argument("--calib-size", type=positive_int, default=None)
    p.add_argument("--fidelity-data",
                   help="images to measure fidelity to the float model on, labels not needed: "
                        "a dataset, a folder of images or a video (default: --data's split); "
                        "the more images, the narrower its interval")
    p.add_argument("--max-frames", type=positive_int, default=1000,
                   help="frames sampled from a video given as --fidelity-data (default 1000)")
    p.add_argument("--max-drop", type=positive_float,
                   help="exit 1 when any row loses more points than this (see --gate)")
    p.add_argument("--gate", choices=tuple(GATES), default="map",
                   help="what --max-drop limits: map, the mAP50-95 drop against the ground "
                        "truth (default), or fidelity, the drop against the float model's "
                        "own boxes")
    p.add_argument("--resamples", type=non_negative_int, default=200,
                   help="bootstrap resamples for the intervals (default 200)")
    p.add_argument("--threads", type=positive_int, help="inference threads (default all cores)")
    p.add_argument("--out", type=output_dir, default=Path("runs/report"),
                   help="where the report (and the exports) go (default runs/report)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar while each row is scored")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show the converters' own output while exporting")


def run(args: argparse.Namespace) -> int:
    from ..contract import inference_name
    from ..errors import UsageError
    from ..export import export
    from ..export.targets import resolve
    from ..models import load_checkpoint

    bundles: list[Path | FakeQuant] = list(args.bundles)
    targets = [t for t in args.targets.split(",") if t]
    precisions = [p for p in args.precisions.split(",") if p]
    qats = [(q, load_checkpoint(q).get("qat")) for q in args.qat]
    for q, record in qats:
        if record is None:
            raise UsageError(f"--qat {q}: not a QAT checkpoint (edge-yolo qat writes one)")
    if not targets and not bundles and not qats:
        raise UsageError("nothing to compare: give --targets to export, --qat or --bundles")
    plan = []
    for target in targets:
        spec, _, _ = resolve(target)  # refuses an unknown target before any work
        plan.append((target, spec.name, [p for p in precisions if p in spec.precisions]))
    calib = None
    from ..console import third_party_output

    out = args.out / "bundles"

    def export_one(weights: Path, target: str, precision: str, name: str | None = None) -> Path:
        print(f"export {weights} -> {target} {precision} ...", flush=True)
        with third_party_output(verbose=args.verbose):
            return export(weights, target, precision=precision, calib=args.calib or args.data,
                          calib_size=args.calib_size, out=out, threads=args.threads, name=name,
                          force=True)  # the report owns its bundles folder

    def export_qat(q: Path, record: dict[str, Any], target: str) -> Path:
        # several QAT runs of one target (an ablation) keep apart: named for their run folder
        model = inference_name(str(load_checkpoint(q)["model"]))
        return export_one(q, target, "int8", f"{model}-{target}-int8-qat-{q.parent.name}")

    for target, name, target_precisions in plan:  # per target: float, PTQ, QAT side by side
        for precision in target_precisions:
            bundles.append(export_one(args.weights, target, precision))
            if precision == "int8" and not args.no_fake_quant:
                if calib is None:
                    from ..quant.calibration import CalibrationSet

                    calib = CalibrationSet.load(args.calib or args.data, args.calib_size)
                print(f"fake-quantize {args.weights.name} for {name} in torch ...", flush=True)
                with third_party_output(verbose=args.verbose):  # NNCF's, and JAX's fork warning
                    bundles.append(fake_quant_ptq(args.weights, name, calib))
        for q, record in qats:
            if record["target"] == name:
                bundles.append(export_qat(q, record, target))
                bundles += qat_rows(q, record)
    planned = {name for _, name, _ in plan}
    for q, record in qats:  # QAT checkpoints whose target was not asked for: still scored
        if record["target"] not in planned:
            bundles.append(export_qat(q, record, record["target"]))
            bundles += qat_rows(q, record)
    report = build_report(args.weights, args.data, bundles, split=args.split,
                          fidelity_data=args.fidelity_data, max_frames=args.max_frames,
                          resamples=args.resamples, threads=args.threads,
                          progress=args.progress)
    paths = write_report(report, args.out)
    record_rows(report)
    print(markdown(report))
    print(f"report: {paths['html']} (and {paths['json'].name}, {paths['markdown'].name})")
    if args.max_drop is not None:
        failed = gate(report, args.max_drop, args.gate)
        measure = GATES[args.gate]
        if failed:
            print(f"FAIL ({args.gate}): {len(failed)} rows drop more than {args.max_drop:g} "
                  f"{measure}: " + "; ".join(failed))
            return 1
        print(f"PASS ({args.gate}): no row drops more than {args.max_drop:g} {measure}")
    return 0


def qat_rows(checkpoint: Path, record: dict[str, Any]) -> list[Path]:
    """A QAT checkpoint's fake-quantized torch rows: its start (``init.pt`` of its run:
    quantizers initialised, no update) and its end, side by side: what fine-tuning added."""
    init = checkpoint.parent / str(record.get("init_checkpoint") or "")
    rows = [init] if record.get("init_checkpoint") and init.is_file() else []
    return [*rows, checkpoint]
