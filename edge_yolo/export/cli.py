"""``edge-yolo export``: a checkpoint to a target's artifact bundle; prints the bundle path.

Every option flag comes from the capability table (:mod:`.targets`): the shared ones and each
target's own. A flag the chosen target does not honour is refused, naming flag and target.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from ..cli_args import existing_path, image_size, output_dir, positive_float, positive_int
from .targets import (
    PRECISIONS,
    SHARED_OPTIONS,
    TARGETS,
    Option,
    TargetError,
    capability_table,
    list_devices,
    resolve,
)


def _all_options() -> dict[str, Option]:
    """Every option flag of every target, once (a flag means the same thing everywhere)."""
    flags: dict[str, Option] = {o.flag: o for o in SHARED_OPTIONS.values()}
    for spec in TARGETS.values():
        for option in spec.options:
            flags.setdefault(option.flag, option)
    return flags


def _dest(option: Option) -> str:
    return "opt_" + option.flag.lstrip("-").replace("-", "_")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    boards = ", ".join(list_devices()) or "none found"
    parser.epilog = f"targets:\n{capability_table()}\n\nboards: {boards}"
    parser.add_argument("--weights", required=True, type=existing_path,
                        help="edge-yolo checkpoint (.pt)")
    parser.add_argument("--target", required=True, help="export target or board name")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="default: the board's, else the target's")
    parser.add_argument("--imgsz", type=image_size, default=None,
                        help="square input size (multiple of 32); default: board, checkpoint, 640")
    parser.add_argument("--calib", default=None,
                        help="calibration images for int8: dataset spec or image folder "
                             "(default: the checkpoint's dataset)")
    parser.add_argument("--calib-size", type=positive_int, default=None,
                        help="number of calibration images (default: board's, else 300)")
    parser.add_argument("--calib-split", default="train",
                        help="dataset split calibration images come from (default train)")
    parser.add_argument("--out", type=output_dir, default="exports",
                        help="directory the bundle is written into")
    parser.add_argument("--name", default=None,
                        help="bundle directory (default <model>-<board or target>-<precision>)")
    parser.add_argument("--force", action="store_true", help="replace a bundle of the same name")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="threads for the verification run on this host")
    parser.add_argument("--max-drop", dest="max_drop", type=positive_float, default=None,
                        help="int8: keep the blocks most sensitive to int8 in float until the "
                             "measured mAP50-95 drop is at most this many points (on the "
                             "--calib dataset's labelled val split)")
    for option in _all_options().values():
        takers = [t.name for t in TARGETS.values()
                  if option in t.options or option.field in t.shared_options
                  and SHARED_OPTIONS.get(option.field) is option]
        text = f"{option.help} [{', '.join(takers)}]"
        if option.kind is bool:
            parser.add_argument(option.flag, dest=_dest(option), action="store_const",
                                const=not option.negate, default=None, help=text)
        else:
            parser.add_argument(option.flag, dest=_dest(option), type=option.kind,
                                choices=option.choices, default=None, help=text)
    parser.add_argument("--compare-ptq", dest="compare_ptq", action="store_true",
                        help="int8 from a QAT checkpoint: also export PTQ of its float model, "
                             "score both against the float model on the QAT run's held-out "
                             "images, and keep the closer one (the bundle says which and why)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log each step, and show the converters' own output")


def table_options(args: argparse.Namespace, target: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(shared ExportOptions fields, target option fields) from the flags given; a flag the
    target does not honour is a :class:`TargetError` naming it and the target."""
    spec = TARGETS[target]
    shared: dict[str, Any] = {}
    own: dict[str, Any] = {}
    for option in _all_options().values():
        value = getattr(args, _dest(option))
        if value is None:
            continue
        if SHARED_OPTIONS.get(option.field) is option and option.field in spec.shared_options:
            shared[option.field] = value
        elif option in spec.options:
            own[option.field] = value
        else:
            takers = [t.name for t in TARGETS.values() if option in t.options
                      or SHARED_OPTIONS.get(option.field) is option
                      and option.field in t.shared_options]
            raise TargetError(
                f"{option.flag} is not an option of target {target!r} "
                f"(targets that take it: {', '.join(takers)})"
            )
    return shared, own


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from .base import ExportOptions
    from .pipeline import run_export

    spec, _, _ = resolve(args.target, args.precision)
    shared, own = table_options(args, spec.name)
    given = ("target", "precision", "imgsz", "calib", "calib_size", "calib_split", "out",
             "name", "threads", "force", "max_drop")
    options = ExportOptions(
        **{k: getattr(args, k) for k in given}, target_options=own or None, **shared
    )
    from ..console import third_party_output
    from ..runtime.bundle import BundleMeta
    from .readme import console_summary

    if args.compare_ptq:
        from ..errors import UsageError
        from ..models import load_checkpoint

        if load_checkpoint(args.weights).get("qat") is None:
            raise UsageError(f"--compare-ptq: {args.weights} is not a QAT checkpoint (its int8 "
                             "export is PTQ already)")
    with third_party_output(verbose=args.verbose):
        bundle = run_export(args.weights, options)
    if args.compare_ptq:
        from ..quant.choose import ship_better_than_ptq

        with third_party_output(verbose=args.verbose):
            decision = ship_better_than_ptq(args.weights, bundle, options, log=lambda _: None)
        print(f"ships {decision['ships'].upper()}: {decision['why']}")
    print(console_summary(bundle, BundleMeta.read(bundle)))
    return 0
