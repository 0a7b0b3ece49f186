"""``edge-yolo data``: check a dataset before training and preview its augmented samples.

Prints the image and box counts per class and the bad-data report; ``--check-images``
decodes every image (finds corrupt files up front instead of during training);
``--preview grid.jpg`` draws augmented training samples with their boxes; ``--strict`` exits
with 1 when any problem was found (a CI gate on a dataset).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_bytes
from .report import DatasetError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="data YAML, COCO JSON, VOC folder, 'synthetic' or 'synthetic:N'")
    p.add_argument("--split", default="train", help="split to read (default: train)")
    p.add_argument("--imgsz", type=int, default=320, help="preview / synthetic image size")
    p.add_argument("--check-images", action="store_true", help="decode every image now")
    p.add_argument("--preview", type=Path, help="write a grid of augmented samples here (.jpg)")
    p.add_argument("--num", type=int, default=16, help="samples in the preview (default 16)")
    p.add_argument("--seed", type=int, default=0, help="augmentation seed of the preview")
    p.add_argument("--strict", action="store_true", help="exit 1 if any data problem was found")


def class_counts(dataset: object) -> tuple[np.ndarray, int]:
    """Boxes per class and images without boxes, from labels alone where the format allows."""
    from .dataset import DetectionDataset, ImageFileDataset, ImageReadError

    assert isinstance(dataset, DetectionDataset)
    counts = np.zeros(len(dataset.names), np.int64)
    empty = 0
    for i in range(len(dataset)):
        if isinstance(dataset, ImageFileDataset):
            classes = dataset.items[i].classes
        else:
            try:
                classes = dataset.annotations(i)[1]
            except ImageReadError:
                continue
        counts += np.bincount(classes, minlength=len(counts))
        empty += not len(classes)
    return counts, empty


def draw_preview(dataset: object, imgsz: int, num: int, seed: int) -> np.ndarray:
    """A grid of ``num`` augmented training samples with their boxes and class names."""
    import cv2

    from .augment import Augmenter
    from .dataset import DetectionDataset, ImageReadError, Sample

    assert isinstance(dataset, DetectionDataset)
    augmenter = Augmenter(imgsz)

    def load(i: int) -> Sample:
        # A preview shows what can be read; the report already names what cannot.
        for k in range(len(dataset)):
            try:
                return dataset.load((i + k) % len(dataset))
            except ImageReadError:
                continue
        raise DatasetError(f"{dataset.source}: no readable image")

    tiles = []
    for k in range(num):
        rng = np.random.default_rng([seed, k])
        index = int(rng.integers(len(dataset)))
        image, boxes, classes = augmenter(index, load, len(dataset), rng)
        image = image.copy()
        for (x1, y1, x2, y2), c in zip(boxes.round().astype(int), classes):
            colour = tuple(int(v) for v in np.random.default_rng(int(c)).integers(64, 256, 3))
            cv2.rectangle(image, (x1, y1), (x2, y2), colour, 1)
            cv2.putText(image, dataset.names[c], (x1, max(y1 - 2, 8)), 0, 0.35, colour, 1)
        tiles.append(image)
    cols = int(np.ceil(np.sqrt(num)))
    tiles += [np.full_like(tiles[0], 114)] * (cols * cols - len(tiles))
    rows = [np.hstack(tiles[r * cols : (r + 1) * cols]) for r in range(len(tiles) // cols)]
    return np.vstack([r for r in rows if r.size])


def _write_image(path: Path, image: np.ndarray) -> None:
    import cv2

    ok, data = cv2.imencode(path.suffix or ".jpg", image)
    if not ok:
        raise ValueError(f"{path}: OpenCV cannot encode this image type")
    atomic_write_bytes(path, data.tobytes())


def run(args: argparse.Namespace) -> int:
    from .formats import load_dataset

    kwargs = {"imgsz": args.imgsz} if str(args.data).split(":")[0] == "synthetic" else {}
    try:
        dataset = load_dataset(args.data, args.split, **kwargs)
    except DatasetError as e:
        print(f"edge-yolo data: {e}", file=sys.stderr)
        return 2
    print(f"{dataset.source}: {len(dataset)} images, {len(dataset.names)} classes")
    if args.check_images:
        for _ in dataset:  # iteration reports every image that fails to decode
            pass
    counts, empty = class_counts(dataset)
    width = max(len(n) for n in dataset.names)
    for name, n in zip(dataset.names, counts):
        print(f"  {name:<{width}}  {n} boxes")
    print(f"  {empty} images without boxes")
    print(dataset.report.summary())
    if args.preview:
        _write_image(args.preview, draw_preview(dataset, args.imgsz, args.num, args.seed))
        print(f"preview of {args.num} augmented samples: {args.preview}")
    return 1 if args.strict and dataset.report else 0
