"""``edge-yolo data``: check a dataset before training and preview its augmented samples.

Decodes every image (a corrupt or truncated file is found now, not during training;
``--labels-only`` reads the labels alone, faster on a large set), then prints the image and
box counts per class of the usable images and the bad-data report;
``--preview grid.jpg`` draws augmented training samples with their boxes; ``--strict`` exits
with 1 when any problem was found (a CI gate on a dataset).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..cli_args import image_size, non_negative_int, output_file, positive_int
from ..fileio import atomic_write_bytes
from .report import DatasetError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="data YAML, COCO JSON, VOC folder, 'synthetic' or 'synthetic:N'")
    p.add_argument("--split", default="train", help="split to read (default: train)")
    p.add_argument("--imgsz", type=image_size, default=320,
                   help="preview / synthetic image size")
    p.add_argument("--labels-only", action="store_true",
                   help="skip decoding the images (labels are always checked)")
    p.add_argument("--preview", type=output_file,
                   help="write a grid of augmented samples here (.jpg or .png)")
    p.add_argument("--num", type=positive_int, default=16,
                   help="samples in the preview (default 16)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="augmentation seed of the preview")
    p.add_argument("--strict", action="store_true", help="exit 1 if any data problem was found")


def class_counts(dataset: object, skip: set[str] = frozenset()) -> tuple[np.ndarray, int]:
    """Boxes per class and images without boxes, from labels alone where the format allows;
    the images in ``skip`` (paths that failed to decode) count for nothing."""
    from .dataset import DetectionDataset, ImageFileDataset, ImageReadError

    assert isinstance(dataset, DetectionDataset)
    counts = np.zeros(len(dataset.names), np.int64)
    empty = 0
    for i in range(len(dataset)):
        if skip and dataset.image_path(i) in skip:
            continue
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
    dataset = load_dataset(args.data, args.split, **kwargs)
    print(f"{dataset.source}: {len(dataset)} images, {len(dataset.names)} classes")
    if not args.labels_only:
        for _ in dataset:  # iteration reports every image that fails to decode
            pass
    unreadable = dataset.unreadable
    if unreadable:
        print(f"  {len(unreadable)} images cannot be decoded and are left out below")
    counts, empty = class_counts(dataset, unreadable)
    width = max(len(n) for n in dataset.names)
    for name, n in zip(dataset.names, counts):
        print(f"  {name:<{width}}  {n} boxes")
    print(f"  {empty} images without boxes")
    print(dataset.report.summary())
    if args.preview:
        _write_image(args.preview, draw_preview(dataset, args.imgsz, args.num, args.seed))
        print(f"preview of {args.num} augmented samples: {args.preview}")
    return 1 if args.strict and dataset.report else 0
