"""Reading a dataset's text files (labels, lists, annotations) with errors that name them."""

from __future__ import annotations

from pathlib import Path

from .report import DatasetError


def read_text(path: Path, what: str) -> str:
    """A whole text file (a UTF-8 byte-order mark dropped) or a DatasetError naming it."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read {what} ({e})") from e
