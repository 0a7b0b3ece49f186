"""``edge-yolo export``: a checkpoint to a target's artifact bundle; prints the bundle path."""

from __future__ import annotations

import argparse
import logging
import sys

from .targets import PRECISIONS, TargetError, capability_table, list_devices, resolve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    boards = ", ".join(list_devices()) or "none found"
    parser.epilog = f"targets:\n{capability_table()}\n\nboards (devices/*.yaml): {boards}"
    parser.add_argument("--weights", required=True, help="edge-yolo checkpoint (.pt)")
    parser.add_argument("--target", required=True, help="export target or board name")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="default: the board's, else the target's")
    parser.add_argument("--imgsz", type=int, default=None,
                        help="square input size (multiple of 32); default: board, checkpoint, 640")
    parser.add_argument("--calib", default=None,
                        help="calibration images for int8: dataset spec or image folder "
                             "(default: the checkpoint's dataset)")
    parser.add_argument("--calib-size", type=int, default=None,
                        help="number of calibration images (default: board's, else 300)")
    parser.add_argument("--out", default="exports", help="directory the bundle is written into")
    parser.add_argument("--name", default=None,
                        help="bundle directory name (default <model>-<target>-<precision>)")
    parser.add_argument("--dynamic", action="store_true", help="dynamic batch dimension")
    parser.add_argument("--opset", type=int, default=18,
                        help="ONNX opset (onnx/jetson); 17 for TensorRT 8.x")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for the verification run on this host")
    parser.add_argument("--nncf-preset", choices=("mixed", "performance"), default=None,
                        help="intel int8: NNCF preset (default mixed)")
    parser.add_argument("--overflow-fix", choices=("auto", "enable", "first_layer_only", "disable"),
                        default=None, help="intel int8: NNCF overflow fix (default auto: VNNI)")
    parser.add_argument("--calibrate-method", choices=("minmax", "percentile", "entropy"),
                        default=None, help="jetson int8: activation range method (default minmax)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")


def target_options(args: argparse.Namespace, target: str) -> object | None:
    """The target's options dataclass from its flags (None: the target's defaults)."""
    intel = {"preset": args.nncf_preset, "overflow_fix": args.overflow_fix}
    jetson = {"calibrate_method": args.calibrate_method}
    given = {k: v for k, v in {**intel, **jetson}.items() if v is not None}
    if not given:
        return None
    if target == "intel" and set(given) <= set(intel):
        from .openvino import OpenVINOOptions

        return OpenVINOOptions(**given)
    if target == "jetson" and set(given) <= set(jetson):
        from .jetson import JetsonOptions

        return JetsonOptions(**given)
    flags = ", ".join("--" + k.replace("_", "-").replace("preset", "nncf-preset") for k in given)
    raise TargetError(
        f"{flags}: not an option of target {target!r} (intel takes --nncf-preset and "
        "--overflow-fix, jetson takes --calibrate-method)"
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from ..models import CheckpointError
    from .base import ExportError, ExportOptions, run_export

    try:
        spec, _, _ = resolve(args.target, args.precision)
        options = ExportOptions(
            target=args.target,
            precision=args.precision,
            imgsz=args.imgsz,
            calib=args.calib,
            calib_size=args.calib_size,
            dynamic=args.dynamic,
            out=args.out,
            name=args.name,
            simplify=not args.no_simplify,
            opset=args.opset,
            threads=args.threads,
            target_options=target_options(args, spec.name),
        )
        path = run_export(args.weights, options)
    except (TargetError, ExportError, CheckpointError) as e:
        print(f"edge-yolo export: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0
