"""Argument types for every ``edge-yolo`` command: ranges, sizes and paths checked while the
command line is parsed, before any work starts. A bad value is one line naming the flag
(standard library only)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path


def _number(text: str, kind: type) -> float:
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(_number(text, float))
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def fraction(*, low_open: bool, high_open: bool) -> Callable[[str], float]:
    """A number in [0, 1] with the given ends open: conf takes [0, 1), IoU (0, 1]."""
    lo, hi = "(" if low_open else "[", ")" if high_open else "]"

    def parse(text: str) -> float:
        value = float(_number(text, float))
        ok = (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be in {lo}0, 1{hi}, got {text}")
        return value

    return parse


confidence = fraction(low_open=False, high_open=True)
iou_threshold = fraction(low_open=True, high_open=False)


def image_size(text: str) -> int:
    """A square network input side: a multiple of the largest stride (32), 32..8192."""
    value = int(_number(text, int))
    if value < 32 or value > 8192 or value % 32:
        raise argparse.ArgumentTypeError(f"must be a multiple of 32 from 32 to 8192, got {value}")
    return value


def existing_path(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{path}: no such file or directory")
    return path


def _writable_ancestor(path: Path) -> None:
    parent = path.absolute()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{path}: {parent} is not writable")


def output_dir(text: str) -> Path:
    """A directory to write into: existing, or creatable, and not a file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a file, not a directory")
    _writable_ancestor(path)
    return path


def output_file(text: str) -> Path:
    """A file to (re)write: not a directory, in a writable directory."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a directory, not a file")
    _writable_ancestor(path.parent if str(path.parent) else Path("."))
    return path
