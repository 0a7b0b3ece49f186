"""Images without labels, as datasets: a folder of photos or frames sampled from a video.

What a user has most of is footage from the very camera the model will run on, and no time
to label it. Label-free QAT (distillation from the float model) and the report's fidelity
measure (agreement with the float model's own detections) both read such images through the
dataset interface, with empty ground truth, so the loaders and the evaluation path need no
special case. :func:`open_images` takes any of the sources a user may hand over: a labeled
dataset spec (read as it is), a folder or a single image file, or a video file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..runtime.processing import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from .dataset import DetectionDataset, ImageReadError, Sample, empty_boxes, list_images, read_image
from .formats import is_dataset_spec, load_dataset, spec_kwargs
from .report import DataReport, DatasetError

#: frames taken from a video when no count is asked for: evenly spread over its length
DEFAULT_FRAMES = 1000
#: sampled frames are kept in memory JPEG-encoded at this quality (a 720p frame ~150 kB)
FRAME_QUALITY = 95


class UnlabeledImages(DetectionDataset):
    """Image files with no labels; ``names`` are the model's classes."""

    def __init__(self, files: Sequence[Path], names: Sequence[str], *, source: str) -> None:
        if not files:
            raise DatasetError(f"{source}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        self.files = [Path(f) for f in files]
        self.names = list(names)
        self.source = source
        self.report = DataReport()
        self.labeled = False

    def __len__(self) -> int:
        return len(self.files)

    def image_path(self, index: int) -> str:
        return str(self.files[self._index(index)])

    def annotations(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return empty_boxes()

    def num_boxes(self) -> int:
        return 0

    def load(self, index: int) -> Sample:
        path = self.files[self._index(index)]
        return Sample(read_image(path), *empty_boxes(), str(path))


class VideoFrames(DetectionDataset):
    """Up to ``max_frames`` frames of a video, evenly spread over it, decoded once and kept
    in memory (JPEG at :data:`FRAME_QUALITY`); sample paths read ``video.mp4#frame=N``."""

    def __init__(self, video: Path, names: Sequence[str], max_frames: int = DEFAULT_FRAMES) -> None:
        if max_frames < 1:
            raise DatasetError(f"{video}: max_frames must be >= 1")
        self.names = list(names)
        self.source = str(video)
        self.report = DataReport()
        self.labeled = False
        self.frames: list[tuple[int, bytes]] = []
        cap = cv2.VideoCapture(str(video))
        try:
            if not cap.isOpened():
                raise DatasetError(f"{video}: cannot be opened as a video")
            total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            if total <= 0:  # some containers do not say: count them
                while cap.grab():
                    total += 1
                cap.release()
                cap = cv2.VideoCapture(str(video))
            wanted = set(np.linspace(0, max(total - 1, 0), min(max_frames, max(total, 1)))
                         .round().astype(int).tolist())
            index = 0
            while wanted and cap.grab():
                if index in wanted:
                    ok, frame = cap.retrieve()
                    if ok and frame is not None and frame.size:
                        ok, jpeg = cv2.imencode(".jpg", frame,
                                                [cv2.IMWRITE_JPEG_QUALITY, FRAME_QUALITY])
                        if ok:
                            self.frames.append((index, jpeg.tobytes()))
                    wanted.discard(index)
                index += 1
        finally:
            cap.release()
        if not self.frames:
            raise DatasetError(f"{video}: no frame could be decoded")

    def __len__(self) -> int:
        return len(self.frames)

    def image_path(self, index: int) -> str:
        return f"{self.source}#frame={self.frames[self._index(index)][0]}"

    def annotations(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return empty_boxes()

    def num_boxes(self) -> int:
        return 0

    def load(self, index: int) -> Sample:
        number, jpeg = self.frames[self._index(index)]
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if image is None:  # cannot happen for bytes we encoded; said plainly if it does
            raise ImageReadError(f"{self.source}#frame={number}: frame cannot be decoded")
        return Sample(image, *empty_boxes(), f"{self.source}#frame={number}")


class Subset(DetectionDataset):
    """Some images of a dataset, by index: a split carved from another (QAT's held-out one)."""

    def __init__(self, dataset: DetectionDataset, indices: Sequence[int], what: str) -> None:
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.names = dataset.names
        self.report = dataset.report
        self.source = f"{dataset.source} [{what}]"
        self.labeled = is_labeled(dataset)

    def __len__(self) -> int:
        return len(self.indices)

    def image_path(self, index: int) -> str:
        return self.dataset.image_path(self.indices[self._index(index)])

    def annotations(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.dataset.annotations(self.indices[self._index(index)])

    def load(self, index: int) -> Sample:
        return self.dataset.load(self.indices[self._index(index)])


def is_labeled(dataset: DetectionDataset) -> bool:
    """False for a source of plain images (a folder, a video) read by this module."""
    return bool(getattr(dataset, "labeled", True))


def carve(dataset: DetectionDataset, n: int, seed: int = 0) -> tuple[Subset, Subset]:
    """``(rest, held_out)``: ``n`` images drawn at random (seeded, so a resumed run carves
    the same ones) and kept apart from the rest."""
    if not 1 <= n < len(dataset):
        raise DatasetError(f"{dataset.source}: cannot hold {n} of its {len(dataset)} images "
                           "out (at least one must remain on each side)")
    order = np.random.default_rng(seed).permutation(len(dataset))
    held = sorted(order[:n].tolist())
    rest = sorted(order[n:].tolist())
    return Subset(dataset, rest, f"{len(rest)} images"), Subset(dataset, held, f"{n} held out")


def open_images(
    spec: str | Path,
    names: Sequence[str],
    *,
    split: str = "train",
    imgsz: int = 640,
    max_frames: int = DEFAULT_FRAMES,
) -> DetectionDataset:
    """Images from a labeled dataset (its ``split``), a folder (recursive) or a single image,
    or ``max_frames`` frames of a video file. ``names``: the model's classes, which a
    labeled dataset must match in number."""
    if is_dataset_spec(spec):
        dataset = load_dataset(spec, split=split, **spec_kwargs(spec, imgsz))
        if len(dataset.names) != len(names):
            raise DatasetError(f"{spec}: {len(dataset.names)} classes, the model has "
                               f"{len(names)}")
        return dataset
    path = Path(spec).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: does not exist (expected a dataset, a folder of images or "
                           "a video file)")
    if path.is_dir():
        return UnlabeledImages(list_images(path), names, source=str(path))
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return VideoFrames(path, names, max_frames)
    if suffix in IMAGE_SUFFIXES:
        return UnlabeledImages([path], names, source=str(path))
    raise DatasetError(f"{path}: not a dataset, an image ({', '.join(IMAGE_SUFFIXES)}) or a "
                       f"video ({', '.join(VIDEO_SUFFIXES)})")
