"""The one dataset interface every format implements, and the box checks they share.

``dataset[i]`` / ``dataset.load(i)`` returns a :class:`Sample` (CONTRACTS.md): a BGR ``uint8``
image, ``float32`` xyxy boxes in that image's pixels and ``int64`` class ids. Labels are read
and checked when the dataset is built (cheap); images are decoded on access, and one that
fails to decode raises :class:`ImageReadError`, which the training loader turns into a
substitute sample rather than a crash.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..runtime import processing
from .report import DataReport, DatasetError

IMAGE_SUFFIXES = processing.IMAGE_SUFFIXES


class ImageReadError(DatasetError):
    """One image that is missing or cannot be decoded; names the file."""


class Sample(NamedTuple):
    """One image and its ground truth: BGR uint8 (H, W, 3), float32 xyxy (N, 4), int64 (N,)."""

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    path: str


def empty_boxes() -> tuple[np.ndarray, np.ndarray]:
    """Boxes and classes of an image without objects."""
    return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)


def read_image(path: str | Path) -> np.ndarray:
    """The runtime's image decoder (:func:`edge_yolo.runtime.processing.read_image`), its error
    raised as :class:`ImageReadError` so dataset code handles it with the other data errors."""
    try:
        return processing.read_image(path)
    except processing.ImageError as e:
        raise ImageReadError(str(e)) from None


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted for a stable order."""
    found = (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return sorted(p for p in found if p.is_file())


def check_boxes(
    boxes: np.ndarray,
    classes: np.ndarray,
    *,
    num_classes: int,
    size: tuple[float, float] | None,
    path: str | Path,
    report: DataReport,
    lines: Sequence[int | None] | None = None,
    tolerance: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Drop bad classes and empty boxes, clip boxes to the image; report each change.

    ``size`` is (width, height) in the boxes' units, or None when not known yet (the boxes
    are then clipped against the decoded image at load time). Boxes that stick out by no more
    than ``tolerance`` are clipped silently: annotation tools round to the pixel edge.
    """
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    classes = np.asarray(classes, np.int64).reshape(-1)
    if lines is None:
        lines = [None] * len(boxes)
    # Vectorised checks (COCO has ~1M boxes); the Python loop below visits only the bad ones.
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(boxes).all(1)
        known = (classes >= 0) & (classes < num_classes)
        sized = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        clipped = boxes.copy()
        inside = np.ones(len(boxes), bool)
        moved = np.zeros(len(boxes), bool)
        if size is not None:
            w, h = size
            np.clip(clipped, 0, [w, h, w, h], out=clipped)
            inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
            moved = np.abs(clipped - boxes).max(1) > tolerance
    keep = finite & known & sized & inside
    for j in np.flatnonzero(~keep | moved):
        box, line = boxes[j], lines[j]
        if not finite[j]:
            report.add("non_numeric", path, f"box {box.tolist()} is not finite", line)
        elif not known[j]:
            message = f"class {classes[j]} not in 0..{num_classes - 1}"
            report.add("class_out_of_range", path, message, line)
        elif not sized[j]:
            report.add("degenerate_box", path, f"box {_fmt(box)} has zero or negative size", line)
        elif not inside[j]:
            message = f"box {_fmt(box)} lies outside the {_fmt_size(size)} image"
            report.add("degenerate_box", path, message, line)
        else:
            message = (
                f"box {_fmt(box)} exceeds the {_fmt_size(size)} image, "
                f"clipped to {_fmt(clipped[j])}"
            )
            report.add("box_outside_image", path, message, line)
    return clipped[keep], classes[keep]


def _fmt(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in box) + "]"


def _fmt_size(size: tuple[float, float]) -> str:
    return f"{size[0]:g}x{size[1]:g}"


@dataclass
class LabeledImage:
    """An image file and its checked boxes; ``normalized`` boxes are in 0..1 image units."""

    path: Path
    boxes: np.ndarray
    classes: np.ndarray
    normalized: bool = False


class DetectionDataset(ABC):
    """Base of every dataset: ``names``, ``len()``, ``load(i)`` / ``[i]`` -> :class:`Sample`."""

    names: list[str]
    report: DataReport
    source: str

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def load(self, index: int) -> Sample:
        """Decode image ``index`` with its boxes; raises ImageReadError if it cannot be read."""

    def annotations(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Boxes and classes of ``index`` without decoding the image where the format allows."""
        sample = self.load(index)
        return sample.boxes, sample.classes

    def num_boxes(self) -> int:
        """Valid boxes over the whole set (from the labels where the format allows)."""
        return sum(len(self.annotations(i)[1]) for i in range(len(self)))

    def image_path(self, index: int) -> str:
        """Where image ``index`` comes from (a file path, or a synthetic id)."""
        return self.load(index).path

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def _index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} images")
        return index % n

    def __getitem__(self, index: int) -> Sample:
        return self.load(index)

    def __iter__(self) -> Iterator[Sample]:
        """Every readable sample in order; an unreadable image is reported (once) and skipped."""
        for i in range(len(self)):
            try:
                yield self.load(i)
            except ImageReadError as e:
                self.note_unreadable(self.image_path(i), str(e))

    @property
    def unreadable(self) -> set[str]:
        """Paths of the images found so far that cannot be decoded."""
        return self.__dict__.setdefault("_unreadable_seen", set())

    def note_unreadable(self, path: str, reason: str) -> None:
        """Count an image that failed to decode in ``report``, once per file whatever the epoch."""
        seen = self.unreadable
        if path not in seen:
            seen.add(path)
            self.report.add("unreadable_image", path, reason)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.source!r}, {len(self)} images, "
            f"{len(self.names)} classes, {self.report.total} data problems)"
        )


class ImageFileDataset(DetectionDataset):
    """Images on disk with labels parsed and checked up front (YOLO, COCO and VOC readers)."""

    def __init__(
        self, items: list[LabeledImage], names: list[str], *, source: str, report: DataReport
    ) -> None:
        if not names:
            raise DatasetError(f"{source}: no class names")
        if not items:
            raise DatasetError(
                f"{source}: no usable images ({report.total} data problems)"
                + (f"\n{report.summary()}" if report else "")
            )
        self.items = items
        self.names = list(names)
        self.source = source
        self.report = report

    def __len__(self) -> int:
        return len(self.items)

    def num_boxes(self) -> int:
        return sum(len(item.classes) for item in self.items)

    def image_path(self, index: int) -> str:
        return str(self.items[self._index(index)].path)

    def annotations(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        item = self.items[self._index(index)]
        if item.normalized:
            # Pixel units need the image size, known only after decoding.
            sample = self.load(index)
            return sample.boxes, sample.classes
        return item.boxes.copy(), item.classes.copy()

    def load(self, index: int) -> Sample:
        item = self.items[self._index(index)]
        image = read_image(item.path)
        h, w = image.shape[:2]
        boxes = item.boxes.copy()
        if item.normalized:
            boxes *= np.array([w, h, w, h], np.float32)
        # Declared sizes (COCO, VOC) can disagree with the file; clip to what was decoded.
        boxes, classes = check_boxes(
            boxes,
            item.classes,
            num_classes=len(self.names),
            size=(w, h),
            path=item.path,
            report=self.report,
            tolerance=1.0,
        )
        if not item.normalized:
            # Keep the clipped boxes so a box is reported once, not once per epoch.
            item.boxes, item.classes = boxes.copy(), classes.copy()
        return Sample(image, boxes, classes, str(item.path))


class FirstN:
    """The first ``n`` samples of a dataset (quick validation on large sets)."""

    def __init__(self, dataset: DetectionDataset, n: int) -> None:
        self.dataset, self.n, self.names = dataset, min(n, len(dataset)), dataset.names

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.dataset[i]


#: report kinds whose label entries were dropped (an object or a whole line lost)
DROPPED_LABELS = ("bad_field_count", "non_numeric", "unknown_class", "class_out_of_range",
                  "degenerate_box", "unknown_image_id")


def check_trainable(dataset: DetectionDataset) -> str | None:
    """Refuse a dataset that cannot train, before training starts (:class:`DatasetError`, one
    line): no valid box in its labels, or no image that decodes (images are tried in a spread
    order until one does, so an all-corrupt set is found without reading a good set whole).
    Returns a warning when most label entries were invalid and dropped, else None."""
    n = len(dataset)
    boxes = dataset.num_boxes()
    dropped = sum(dataset.report.counts[k] for k in DROPPED_LABELS)
    if boxes == 0:
        raise DatasetError(
            f"{dataset.source}: no valid boxes in {n} images ({dropped} invalid label entries "
            "dropped): nothing to learn from; `edge-yolo data` lists the problems"
        )
    order = sorted(range(n), key=lambda i: (i * 7919) % n) if n > 1 else [0]
    first_error = ""
    for i in order:
        try:
            dataset.load(i)
            break
        except ImageReadError as e:
            first_error = first_error or str(e)
    else:
        raise DatasetError(
            f"{dataset.source}: none of its {n} images can be decoded, e.g. {first_error}"
        )
    if dropped > boxes:
        return (
            f"WARNING {dataset.source}: most labels are invalid: {dropped} label entries were "
            f"dropped and {boxes} valid boxes remain; check them with `edge-yolo data`"
        )
    return None
