"""The calibration set: one place that loads calibration images and feeds every quantizer.

A :class:`CalibrationSet` holds the decoded images with their provenance (source, split, how
many were asked for and found, a hash over the pixels) and hands them to each library in the
form it takes: NNCF datasets, onnxruntime's calibration reader, ai-edge-quantizer's signature
feed. Every form letterboxes and normalises with :func:`edge_yolo.runtime.processing.preprocess`,
the runtime's own code, so the ranges a quantizer measures are the ones the device will see.
Blobs are made one at a time: 300 images at 640 px would be 1.5 GB of float32.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import EdgeYoloError
from ..runtime.bundle import Calibration
from ..runtime.processing import preprocess

LOGGER = logging.getLogger(__name__)

DEFAULT_SIZE = 300
DEFAULT_SPLIT = "train"


class CalibrationError(EdgeYoloError, ValueError):
    """Calibration images that cannot be had; says from where and why."""


def sha256_images(images: list[np.ndarray]) -> str:
    """Hash over the decoded pixels (shape + bytes, in order): identical calibration sets match
    whatever their file encoding."""
    h = hashlib.sha256()
    for im in images:
        h.update(str(im.shape).encode())
        h.update(np.ascontiguousarray(im).tobytes())
    return h.hexdigest()


@dataclass
class CalibrationSet:
    """Calibration images (BGR uint8) and where they came from."""

    images: list[np.ndarray]
    source: str
    split: str = DEFAULT_SPLIT
    requested: int = 0

    def __post_init__(self) -> None:
        if not self.images:
            raise CalibrationError(f"{self.source}: no calibration images")
        self.sha256 = sha256_images(self.images)

    @classmethod
    def load(
        cls, source: str, size: int | None = None, *, split: str = DEFAULT_SPLIT, seed: int = 0,
        asked: bool | None = None,
    ) -> CalibrationSet:
        """Up to ``size`` (default :data:`DEFAULT_SIZE`) images of ``split`` from a dataset
        spec, or from an image folder (a seeded random subset when there are more, so
        calibration covers the whole set). A set smaller than ``size`` is used as it is, with
        a warning only when the user asked for that many (``asked``; default: ``size`` given)."""
        from ..data import DatasetError, load_images

        asked = size is not None if asked is None else asked
        size = size or DEFAULT_SIZE
        try:
            images = load_images(source, size, split=split, seed=seed)
        except (OSError, ValueError, DatasetError) as e:
            raise CalibrationError(f"calibration images from {source}: {e}") from e
        return cls._found(images, str(source), split, size, asked)

    @classmethod
    def from_dataset(cls, dataset: Any, size: int | None = None, *, seed: int = 0,
                     source: str | None = None, split: str = DEFAULT_SPLIT) -> CalibrationSet:
        """Up to ``size`` readable images of a dataset object (a seeded random subset when it
        has more), e.g. the part of a QAT run's data it trains on."""
        import random

        asked = size is not None
        size = size or DEFAULT_SIZE
        order = list(range(len(dataset)))
        if size < len(order):
            order = sorted(random.Random(seed).sample(order, size))
        images = []
        for i in order:
            try:
                images.append(dataset.load(i).image)
            except (OSError, ValueError) as e:  # ImageReadError: reported, skipped
                LOGGER.warning("%s (skipped)", e)
        return cls._found(images, source or str(dataset.source), split, size, asked)

    @classmethod
    def _found(cls, images: list[np.ndarray], source: str, split: str, size: int,
               asked: bool) -> CalibrationSet:
        found = cls(images, source, split, size if asked else len(images))
        if asked and len(images) < size:
            LOGGER.warning(
                "calibration: %d images asked for, %s [%s] has %d", size, source, split, len(images)
            )
        LOGGER.info("calibration: %d images from %s [%s]", len(images), source, split)
        return found

    def __len__(self) -> int:
        return len(self.images)

    def provenance(self) -> Calibration:
        """What the bundle's metadata records about this set."""
        return Calibration(
            dataset=self.source,
            num_images=len(self.images),
            sha256=self.sha256,
            split=self.split,
            requested=self.requested or len(self.images),
        )

    def blobs(self, imgsz: int, layout: str = "NCHW") -> Iterator[np.ndarray]:
        """Letterboxed, normalised ``(1, 3, S, S)`` blobs (NHWC on request), one at a time."""
        for image in self.images:
            yield preprocess(image, imgsz, layout=layout)[0]

    # -- one feed per quantization library ----------------------------------------------------

    def nncf_dataset(self, imgsz: int) -> Any:
        """An ``nncf.Dataset`` yielding NCHW blobs."""
        import nncf

        return nncf.Dataset(self.images, lambda im: preprocess(im, imgsz)[0])

    def onnx_reader(self, input_name: str, imgsz: int) -> Any:
        """onnxruntime's ``CalibrationDataReader`` protocol (``get_next`` / ``rewind``)."""
        return _BlobReader(self, input_name, imgsz)

    def signature_feed(self, input_name: str, imgsz: int, layout: str = "NHWC") -> Any:
        """Re-iterable ``{input_name: blob}`` dicts (ai-edge-quantizer walks them twice)."""
        return _SignatureFeed(self, input_name, imgsz, layout)


class _BlobReader:
    def __init__(self, calib: CalibrationSet, input_name: str, imgsz: int) -> None:
        self.calib, self.input_name, self.imgsz = calib, input_name, imgsz
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        blob = next(self._it, None)
        return None if blob is None else {self.input_name: blob}

    def rewind(self) -> None:
        self._it = self.calib.blobs(self.imgsz)


class _SignatureFeed:
    def __init__(self, calib: CalibrationSet, input_name: str, imgsz: int, layout: str) -> None:
        self.calib, self.input_name, self.imgsz, self.layout = calib, input_name, imgsz, layout

    def __len__(self) -> int:
        return len(self.calib)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for blob in self.calib.blobs(self.imgsz, self.layout):
            yield {self.input_name: blob}
