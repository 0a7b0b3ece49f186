"""``edge-yolo`` command line. Each subcommand lives beside the code it drives (``COMMANDS``);
a host-only subcommand (train, export) imports torch only when it runs."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from .errors import EdgeYoloError, first_line

# subcommand -> (module, one-line help). The module defines add_arguments(parser) and run(args)
# and imports heavy libraries (torch, openvino, ...) inside run(), so --help stays fast.
COMMANDS = {
    "info": ("edge_yolo.info_cli", "build a model, fuse it and print its summary"),
    "data": ("edge_yolo.data.cli", "check a dataset, report bad data, preview augmentation"),
    "export": ("edge_yolo.export.cli", "export a checkpoint to a target's artifact bundle"),
    "train": ("edge_yolo.train.cli", "train or fine-tune a model (host, needs torch)"),
    "qat": ("edge_yolo.quant.cli", "quantization-aware fine-tuning for one target (NNCF; "
            "PGI kept in float)"),
    "val": ("edge_yolo.eval.cli", "evaluate a checkpoint or a bundle: COCO mAP50-95 and mAP50"),
    "report": ("edge_yolo.eval.report_cli", "what each export cost in accuracy: mAP drop with "
               "intervals, per target, as JSON, Markdown and HTML"),
    "predict": ("edge_yolo.runtime.cli", "run a bundle on an image, folder or video"),
    "verify": ("edge_yolo.runtime.verify", "check a bundle on this device against its references"),
    "benchmark": ("edge_yolo.runtime.benchmark", "latency, FPS, load time and memory of bundles, "
                  "side by side"),
}


#: exit codes (listed in the README)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class _Parser(argparse.ArgumentParser):
    """A mistake on the command line is one line: ``edge-yolo <command>: <what is wrong>``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from edge_yolo import __version__

    parser = _Parser(
        prog="edge-yolo",
        description="Train YOLOv9 (GELAN + PGI) detectors, export them per device, run them there.",
        epilog="exit codes: 0 done; 1 done, but a check failed or inputs were skipped; "
        "2 a mistake in the arguments or inputs; 3 an internal error (rerun with --debug); "
        "130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"edge-yolo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        p.add_argument("--debug", action="store_true",
                       help="show the full traceback of an error")
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
    # Line-buffered output: a run that is killed keeps its last lines in a piped log.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    prog = f"edge-yolo {args.command}"
    missing = getattr(args, "_missing", None)
    if missing:
        print(
            f"{prog}: needs the '{missing}' package, which is not installed "
            "(pip install 'edge-yolo[host]' on the training host)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    mod = importlib.import_module(args._module)
    try:
        return int(mod.run(args) or 0)
    except (EdgeYoloError, FileNotFoundError) as e:
        if args.debug:
            raise
        print(f"{prog}: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except ModuleNotFoundError as e:
        if args.debug or (e.name and e.name.startswith("edge_yolo")):
            raise
        print(
            f"{prog}: needs the '{e.name}' package, which is not installed "
            "(see the README for the extras each target needs)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if args.debug:
            raise
        print(
            f"{prog}: internal error: {type(e).__name__}: {first_line(e)} "
            f"(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split("\n")).strip() or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
