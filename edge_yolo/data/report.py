"""Bad-data reporting: every problem found in a dataset is logged, counted and kept as an example.

A dataset never stops training for one bad file: the image is skipped or the box clipped or
dropped, and the problem lands in :class:`DataReport` (``dataset.report``), which prints as a
summary. Problems that make the whole dataset unusable raise :class:`DatasetError` instead,
before training starts.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EdgeYoloError

LOGGER = logging.getLogger("edge_yolo.data")

# kind -> what was done about it; the keys are the only kinds a report accepts.
KINDS: dict[str, str] = {
    "missing_image": "image skipped",
    "unreadable_image": "image skipped",
    "bad_annotation_file": "file skipped",
    "bad_field_count": "line skipped",
    "non_numeric": "line skipped",
    "unknown_class": "object skipped",
    "class_out_of_range": "object skipped",
    "box_outside_image": "box clipped",
    "degenerate_box": "box dropped",
    "unknown_image_id": "annotation skipped",
    "duplicate_image": "image skipped",
}

# After this many log lines of one kind the rest go to DEBUG: a broken export with 100k bad
# lines must not bury the training log, and the report still counts every one.
_LOG_LIMIT = 20
_EXAMPLES = 5


class DatasetError(EdgeYoloError, ValueError):
    """A dataset that cannot be used at all (missing, empty, unparsable); names the path."""


@dataclass(frozen=True)
class Problem:
    """One bad-data finding, with where it was found."""

    kind: str
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.message} ({KINDS[self.kind]})"


@dataclass
class DataReport:
    """Counts and examples of the problems found in one dataset."""

    source: str = ""
    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[Problem]] = field(default_factory=dict)

    def add(self, kind: str, path: str | Path, message: str, line: int | None = None) -> None:
        """Record one problem and log it (at WARNING for the first few of each kind)."""
        if kind not in KINDS:
            raise KeyError(f"unknown data problem kind {kind!r}; expected one of {sorted(KINDS)}")
        problem = Problem(kind, str(path), line, message)
        self.counts[kind] += 1
        n = self.counts[kind]
        kept = self.examples.setdefault(kind, [])
        if len(kept) < _EXAMPLES:
            kept.append(problem)
        if n <= _LOG_LIMIT:
            LOGGER.warning("%s", problem)
            if n == _LOG_LIMIT:
                LOGGER.warning("further '%s' problems are logged at DEBUG level only", kind)
        else:
            LOGGER.debug("%s", problem)

    @property
    def total(self) -> int:
        """Number of problems of every kind."""
        return sum(self.counts.values())

    def __bool__(self) -> bool:
        return self.total > 0

    def summary(self) -> str:
        """Human-readable summary: one line per kind with its count, then the examples."""
        head = f"data report for {self.source}" if self.source else "data report"
        if not self.counts:
            return f"{head}: no problems found"
        lines = [f"{head}: {self.total} problem(s)"]
        for kind in sorted(self.counts):
            lines.append(f"  {kind}: {self.counts[kind]} ({KINDS[kind]})")
            lines.extend(f"    e.g. {p}" for p in self.examples.get(kind, []))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form: counts per kind and the examples as strings."""
        return {
            "source": self.source,
            "counts": dict(self.counts),
            "examples": {k: [str(p) for p in v] for k, v in self.examples.items()},
        }
