"""``edge-yolo`` command line. Each subcommand lives beside the code it drives (``COMMANDS``);
a host-only subcommand (train, export) imports torch only when it runs."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help). The module defines add_arguments(parser) and run(args)
# and imports heavy libraries (torch, openvino, ...) inside run(), so --help stays fast.
COMMANDS = {
    "info": ("edge_yolo.info_cli", "build a model, fuse it and print its summary"),
    "data": ("edge_yolo.data.cli", "check a dataset, report bad data, preview augmentation"),
    "export": ("edge_yolo.export.cli", "export a checkpoint to a target's artifact bundle"),
    "train": ("edge_yolo.train.cli", "train or fine-tune a model (host, needs torch)"),
    "val": ("edge_yolo.eval.cli", "evaluate a checkpoint or a bundle: COCO mAP50-95 and mAP50"),
    "predict": ("edge_yolo.runtime.cli", "run a bundle on an image, folder or video"),
    "verify": ("edge_yolo.runtime.verify", "check a bundle on this device against its references"),
}


def build_parser() -> argparse.ArgumentParser:
    from edge_yolo import __version__

    parser = argparse.ArgumentParser(
        prog="edge-yolo",
        description="Train YOLOv9 (GELAN + PGI) detectors, export them per device, run them there.",
    )
    parser.add_argument("--version", action="version", version=f"edge-yolo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            # Only a missing third-party library may hide a subcommand (device installs
            # have no torch); a missing edge_yolo module is a bug and must surface.
            if e.name and e.name.startswith("edge_yolo"):
                raise
            p.set_defaults(_missing=e.name)
            # Swallow the subcommand's own arguments so the user sees the real problem
            # (a missing package), not "unrecognized arguments".
            p.add_argument("_rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            continue
        mod.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    missing = getattr(args, "_missing", None)
    if missing:
        print(
            f"edge-yolo {args.command}: needs the '{missing}' package, which is not installed "
            "(pip install 'edge-yolo[host]' on the training host)",
            file=sys.stderr,
        )
        return 2
    mod = importlib.import_module(args._module)
    try:
        return int(mod.run(args) or 0)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("edge_yolo"):
            raise
        print(
            f"edge-yolo {args.command}: needs the '{e.name}' package, which is not installed "
            "(see the README for the extras each target needs)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
