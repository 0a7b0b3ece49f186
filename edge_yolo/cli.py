"""``edge-yolo`` command line. Each subcommand lives beside the code it drives (``COMMANDS``);
a host-only subcommand (train, export) imports torch only when it runs."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from .errors import EdgeYoloError, command_line, first_line

# subcommand -> (module, one-line help, examples). The module defines add_arguments(parser) and
# run(args) and imports heavy libraries (torch, openvino, ...) inside run(), so --help stays
# fast. Every example is parsed by the real parser in the tests.
COMMANDS = {
    "info": ("edge_yolo.info_cli", "build a model, fuse it and print its summary; or describe a "
             "checkpoint or a bundle",
             ["edge-yolo info yolov9-t gelan-s --imgsz 640",
              "edge-yolo info runs/train/best.pt",
              "edge-yolo info exports/gelan-t-rpi5-int8"]),
    "data": ("edge_yolo.data.cli", "check a dataset, report bad data, preview augmentation",
             ["edge-yolo data data.yaml --split train",
              "edge-yolo data datasets/raccoon --preview runs/augmented.jpg --num 8"]),
    "export": ("edge_yolo.export.cli", "export a checkpoint to a target's artifact bundle",
               ["edge-yolo export --weights runs/train/best.pt --target rpi5 --calib data.yaml",
                "edge-yolo export --weights runs/train/best.pt --target intel --precision bf16",
                "edge-yolo export --weights runs/qat-jetson/best.pt --target jetson-orin-nano"]),
    "train": ("edge_yolo.train.cli", "train or fine-tune a model (host, needs torch)",
              ["edge-yolo train --model yolov9-t --data data.yaml --epochs 100 --imgsz 640",
               "edge-yolo train --recipe recipes/finetune-small.yaml --weights yolov9-t.pt "
               "--data data.yaml",
               "edge-yolo train --resume runs/train"]),
    "qat": ("edge_yolo.quant.cli", "quantization-aware fine-tuning for one target (NNCF; "
            "PGI kept in float)",
            ["edge-yolo qat --weights runs/train/best.pt --data data.yaml --target jetson",
             "edge-yolo qat --resume runs/qat"]),
    "val": ("edge_yolo.eval.cli", "evaluate a checkpoint or a bundle: COCO mAP50-95 and mAP50",
            ["edge-yolo val --weights runs/train/best.pt --data data.yaml",
             "edge-yolo val --weights exports/gelan-t-rpi5-int8 --data data.yaml --threads 2"]),
    "report": ("edge_yolo.eval.report_cli", "what each export cost in accuracy: mAP drop with "
               "intervals, per target, as JSON, Markdown and HTML",
               ["edge-yolo report --weights runs/train/best.pt --data data.yaml --targets "
                "intel,rpi,jetson --max-drop 1.5",
                "edge-yolo report --weights runs/train/best.pt --data data.yaml --qat "
                "runs/qat-jetson/best.pt --targets jetson"]),
    "predict": ("edge_yolo.runtime.cli", "run a bundle on images, a video, a camera or a stream",
                ["edge-yolo predict exports/gelan-t-rpi5-int8 photos/ --out runs/predict",
                 "edge-yolo predict exports/gelan-t-rpi5-int8 0 --show",
                 "edge-yolo predict exports/gelan-t-rpi5-int8 rtsp://cam.local/stream --out "
                 "runs/cam --save-jsonl runs/cam/detections.jsonl"]),
    "verify": ("edge_yolo.runtime.verify", "check a bundle on this device against its references",
               ["edge-yolo verify exports/gelan-t-rpi5-int8",
                "edge-yolo verify exports/gelan-t-jetson-orin-nano-int8 --backend onnxruntime"]),
    "benchmark": ("edge_yolo.runtime.benchmark", "latency, FPS, load time and memory of bundles, "
                  "side by side",
                  ["edge-yolo benchmark exports/gelan-t-intel-fp32 exports/gelan-t-intel-int8 "
                   "--threads 2 --runs 100 --json bench.json"]),
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
    for name, (module, help_text, examples) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
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
        shown = "examples:\n" + "\n".join(f"  {line}" for line in examples)
        p.epilog = f"{shown}\n\n{p.epilog}" if p.epilog else shown
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
        with command_line():
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
