"""Dataset readers for the formats users have: YOLO txt + data YAML, COCO JSON, Pascal VOC XML.

:func:`load_dataset` is the one entry point; it picks the reader from the spec:

- ``data.yaml`` (Ultralytics layout): ``path`` (root, relative to the YAML's folder when
  relative; default: that folder), ``train`` / ``val`` / ``test`` (an image folder, a .txt
  list of images, or a list of those, relative to the root) and ``names`` (a list or an
  ``{id: name}`` mapping). Labels live beside the images with ``images`` replaced by
  ``labels`` in the path, one ``class cx cy w h`` line per object in 0..1 units (polygon
  lines ``class x1 y1 x2 y2 ...`` are accepted and reduced to their bounding box). An image
  without a label file is a background image.
- ``instances_*.json`` (COCO): category ids mapped to 0-based class ids in increasing id
  order; crowd annotations skipped. The image folder is found beside the JSON (``images/``,
  ``<split>2017/``, ...) or given as ``images_dir=``. A JSON whose name holds ``train`` or
  ``val`` is swapped for its sibling when the other split is asked for. A folder holding
  ``annotations/instances_<split>*.json`` works too.
- a VOC folder: ``images/`` + ``annotations/`` (+ ``splits/<split>.txt`` of file names), or
  the classic ``JPEGImages/`` + ``Annotations/`` (+ ``ImageSets/Main/<split>.txt`` of stems).
  Class names come from ``names=``, a ``classes.txt`` / ``labels.txt`` in the folder, or
  every object name in the annotations, sorted. Without split files, images are split 80/20
  by a hash of the file name (stable, disjoint). ``split="all"`` takes every image.
  Coordinates are used as written (no 1-based shift), ``difficult`` objects are kept unless
  ``skip_difficult=True``.
- ``synthetic`` / ``synthetic:N``: the built-in procedural dataset (:mod:`.synthetic`).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .dataset import (
    IMAGE_SUFFIXES,
    DetectionDataset,
    ImageFileDataset,
    ImageReadError,
    LabeledImage,
    check_boxes,
    empty_boxes,
    list_images,
    read_image,
)
from .report import LOGGER, DataReport, DatasetError
from .synthetic import SyntheticDataset, parse_synthetic_spec
from .text import read_text
from .voc import load_voc

SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------- YOLO txt


def _parse_names(raw: Any, where: str) -> list[str]:
    if isinstance(raw, list) and raw and all(isinstance(n, str | int) for n in raw):
        return [str(n) for n in raw]
    if isinstance(raw, dict) and raw:
        try:
            ids = sorted(int(k) for k in raw)
        except (TypeError, ValueError):
            message = f"{where}: 'names' keys must be class ids, got {list(raw)}"
            raise DatasetError(message) from None
        if ids != list(range(len(ids))):
            raise DatasetError(f"{where}: 'names' ids must be 0..{len(ids) - 1}, got {ids}")
        by_id = {int(k): str(v) for k, v in raw.items()}
        return [by_id[i] for i in ids]
    raise DatasetError(f"{where}: 'names' must be a non-empty list or {{id: name}} mapping")


def _label_path(image: Path) -> Path:
    parts = list(image.parts)
    # The last "images" component only: a root folder may itself be called images.
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _yolo_image_list(entry: str, root: Path, yaml_path: Path, report: DataReport) -> list[Path]:
    p = Path(entry)
    p = p if p.is_absolute() else root / p
    if p.is_dir():
        return list_images(p)
    if p.is_file() and p.suffix == ".txt":
        out = []
        for n, line in enumerate(read_text(p, "image list").splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            q = Path(line)
            q = q if q.is_absolute() else (p.parent / q)
            if not q.is_file():
                report.add("missing_image", p, f"listed image {q} does not exist", n)
                continue
            out.append(q)
        return out
    raise DatasetError(
        f"{yaml_path}: split entry {entry!r} -> {p} is neither a folder nor a .txt list"
    )


def read_yolo_labels(
    path: Path, num_classes: int, report: DataReport
) -> tuple[np.ndarray, np.ndarray]:
    """Parse one YOLO label file into normalized xyxy boxes; bad lines are reported."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        report.add("bad_annotation_file", path, f"cannot read label file ({e})")
        return empty_boxes()
    boxes, classes, lines = [], [], []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
            report.add(
                "bad_field_count",
                path,
                f"{len(fields)} fields, expected 5 (class cx cy w h) or a polygon",
                n,
            )
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            report.add("non_numeric", path, f"non-numeric field in {line.strip()!r}", n)
            continue
        cls = values[0]
        if not (np.isfinite(cls) and cls == int(cls)):
            report.add("non_numeric", path, f"class id {fields[0]!r} is not an integer", n)
            continue
        if len(values) == 5:
            cx, cy, w, h = values[1:]
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        else:
            xy = np.array(values[1:]).reshape(-1, 2)
            box = [*xy.min(0), *xy.max(0)]
        boxes.append(box)
        classes.append(int(cls))
        lines.append(n)
    if not boxes:
        return empty_boxes()
    # Normalized units: 1e-3 of the image side is below a pixel for any image we train on.
    return check_boxes(
        np.array(boxes, np.float32),
        np.array(classes, np.int64),
        num_classes=num_classes,
        size=(1.0, 1.0),
        path=path,
        report=report,
        lines=lines,
        tolerance=1e-3,
    )


def load_yolo(yaml_path: str | Path, split: str = "train") -> ImageFileDataset:
    """Read the ``split`` of an Ultralytics-style data YAML."""
    yaml_path = Path(yaml_path)
    try:
        cfg = yaml.safe_load(read_text(yaml_path, "data YAML"))
    except yaml.YAMLError as e:
        raise DatasetError(f"{yaml_path}: not valid YAML ({e})") from e
    if not isinstance(cfg, dict):
        raise DatasetError(f"{yaml_path}: expected a mapping with path/train/val/names")
    for key in ("names", split):
        if key not in cfg or cfg[key] in (None, "", []):
            raise DatasetError(f"{yaml_path}: missing required key {key!r}")
    names = _parse_names(cfg["names"], str(yaml_path))
    if "nc" in cfg and cfg["nc"] != len(names):
        raise DatasetError(f"{yaml_path}: nc={cfg['nc']} but {len(names)} names")
    root = Path(cfg.get("path") or ".")
    root = root if root.is_absolute() else yaml_path.parent / root
    if not root.is_dir():
        raise DatasetError(f"{yaml_path}: dataset root {root} does not exist")

    report = DataReport(source=f"{yaml_path} [{split}]")
    entries = cfg[split] if isinstance(cfg[split], list) else [cfg[split]]
    images: list[Path] = []
    for entry in entries:
        images.extend(_yolo_image_list(str(entry), root, yaml_path, report))
    if not images:
        raise DatasetError(f"{yaml_path}: split {split!r} ({entries}) holds no images")
    items, labeled = [], 0
    for image in images:
        label = _label_path(image)
        if label.is_file():
            labeled += 1
            boxes, classes = read_yolo_labels(label, len(names), report)
        else:
            boxes, classes = empty_boxes()
        items.append(LabeledImage(image, boxes, classes, normalized=True))
    if not labeled:
        raise DatasetError(
            f"{yaml_path}: none of the {len(images)} {split!r} images has a label file "
            f"(expected e.g. {_label_path(images[0])})"
        )
    return ImageFileDataset(items, names, source=f"{yaml_path} [{split}]", report=report)


# ---------------------------------------------------------------------------- COCO JSON


def _coco_json_for_split(path: Path, split: str) -> Path:
    if path.is_dir():
        found = sorted((path / "annotations").glob(f"instances_{split}*.json"))
        if not found:
            raise DatasetError(f"{path}: no annotations/instances_{split}*.json")
        return found[0]
    name = path.name
    for other in SPLITS:
        # A split word standing alone ("instances_train2017"), not inside one ("training").
        word = re.compile(rf"(?<![A-Za-z]){other}(?![A-Za-z])")
        if other != split and word.search(name):
            sibling = path.with_name(word.sub(split, name))
            if not sibling.is_file():
                raise DatasetError(
                    f"{path}: asked for split {split!r} but this is the {other!r} file and "
                    f"{sibling} does not exist"
                )
            return sibling
    return path


def _coco_image_dir(json_path: Path, data: dict, images_dir: str | Path | None) -> Path:
    if images_dir is not None:
        d = Path(images_dir)
        if not d.is_dir():
            raise DatasetError(f"{json_path}: images_dir {d} does not exist")
        return d
    stem = json_path.stem.removeprefix("instances_")
    here, up = json_path.parent, json_path.parent.parent
    candidates = [
        here / "images" / stem,
        up / "images" / stem,
        up / stem,
        here / stem,
        here / "images",
        up / "images",
        here,
        up,
    ]
    first = next((im["file_name"] for im in data["images"] if "file_name" in im), None)
    for d in candidates:
        if d.is_dir() and (first is None or (d / first).is_file()):
            return d
    raise DatasetError(
        f"{json_path}: cannot find the image folder (tried {', '.join(map(str, candidates[:4]))}"
        ", ...); pass images_dir="
    )


def load_coco(
    json_path: str | Path, split: str = "train", *, images_dir: str | Path | None = None
) -> ImageFileDataset:
    """Read a COCO instances JSON (category ids -> contiguous 0-based classes)."""
    json_path = _coco_json_for_split(Path(json_path), split)
    try:
        data = json.loads(read_text(json_path, "COCO JSON"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{json_path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise DatasetError(
            f"{json_path}: expected a COCO object with images/annotations/categories"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{json_path}: missing required key {key!r} (a list)")
    try:
        cats = sorted(data["categories"], key=lambda c: int(c["id"]))
        cat_to_class = {int(c["id"]): k for k, c in enumerate(cats)}
        names = [str(c["name"]) for c in cats]
    except (KeyError, TypeError, ValueError) as e:
        message = f"{json_path}: every category needs an integer 'id' and a 'name' ({e})"
        raise DatasetError(message) from e
    image_dir = _coco_image_dir(json_path, data, images_dir)
    report = DataReport(source=f"{json_path} [{split}]")

    images: dict[int, dict] = {}
    for im in data["images"]:
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            message = f"image entry without id/file_name: {im!r:.80}"
            report.add("bad_annotation_file", json_path, message)
            continue
        if im["id"] in images:
            report.add("duplicate_image", json_path, f"image id {im['id']} appears twice")
            continue
        images[im["id"]] = im
    per_image: dict[int, list[tuple[list[float], int, int]]] = {i: [] for i in images}
    for ann in data["annotations"]:
        aid = ann.get("id", "?") if isinstance(ann, dict) else "?"
        where = f"annotation id {aid}"
        if not isinstance(ann, dict) or ann.get("image_id") not in images:
            report.add("unknown_image_id", json_path, f"{where}: image_id not among the images")
            continue
        if ann.get("iscrowd", 0):
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4):
            report.add("bad_field_count", json_path, f"{where}: bbox {bbox!r} is not [x, y, w, h]")
            continue
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            report.add("non_numeric", json_path, f"{where}: non-numeric bbox {bbox!r}")
            continue
        cat = ann.get("category_id")
        if cat not in cat_to_class:
            message = f"{where}: category_id {cat!r} not in categories"
            report.add("class_out_of_range", json_path, message)
            continue
        per_image[ann["image_id"]].append(([x, y, x + w, y + h], cat_to_class[cat], aid))

    items = []
    for image_id, im in images.items():
        path = image_dir / im["file_name"]
        if not path.is_file():
            report.add("missing_image", json_path, f"image id {image_id}: {path} does not exist")
            continue
        anns = per_image[image_id]
        boxes, classes = empty_boxes()
        if anns:
            w, h = im.get("width"), im.get("height")
            size = None
            if isinstance(w, int | float) and isinstance(h, int | float) and w > 0 and h > 0:
                size = (float(w), float(h))
            boxes, classes = check_boxes(
                np.array([a[0] for a in anns], np.float32),
                np.array([a[1] for a in anns]),
                num_classes=len(names),
                size=size,
                path=path,
                report=report,
            )
        items.append(LabeledImage(path, boxes, classes))
    return ImageFileDataset(items, names, source=f"{json_path} [{split}]", report=report)


# ---------------------------------------------------------------------------- Pascal VOC XML


def load_dataset(spec: str | Path, split: str = "train", **kwargs: Any) -> DetectionDataset:
    """Open a dataset from a data YAML, a COCO JSON (or folder), a VOC folder or ``synthetic[:N]``.

    ``kwargs`` go to the reader: ``images_dir`` (COCO), ``names`` / ``skip_difficult`` (VOC),
    ``imgsz`` / ``seed`` / ``num_images`` (synthetic). Raises :class:`DatasetError` naming the
    path and the problem when the dataset cannot be used at all.
    """
    if isinstance(spec, str) and spec.split(":")[0] == "synthetic":
        return SyntheticDataset(split=split, **{**parse_synthetic_spec(spec, split), **kwargs})
    path = Path(spec).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: dataset does not exist")
    if path.is_file():
        if path.suffix in (".yaml", ".yml"):
            return load_yolo(path, split, **kwargs)
        if path.suffix == ".json":
            return load_coco(path, split, **kwargs)
        raise DatasetError(f"{path}: unknown dataset file type (expected .yaml, .yml or .json)")
    if any((path / d).is_dir() for d in ("annotations", "Annotations")):
        if list(path.glob("annotations/instances_*.json")):
            return load_coco(path, split, **kwargs)
        return load_voc(path, split, **kwargs)
    yamls = [p for p in (path / "data.yaml", path / "dataset.yaml") if p.is_file()]
    if yamls:
        return load_yolo(yamls[0], split, **kwargs)
    raise DatasetError(
        f"{path}: not a dataset folder (expected data.yaml, annotations/instances_*.json, "
        "or VOC annotations/ + images/)"
    )


def spec_kwargs(spec: str | Path, imgsz: int) -> dict[str, Any]:
    """Synthetic images are drawn at the size they are used at: no resampling, less work."""
    return {"imgsz": imgsz} if str(spec).split(":")[0] == "synthetic" else {}


def is_dataset_spec(spec: str | Path) -> bool:
    """A labeled dataset (``synthetic[:N]``, a data YAML / COCO JSON, a dataset folder), as
    opposed to plain images (a folder, an image file, a video)."""
    text = str(spec)
    if text.split(":")[0] == "synthetic":
        return True
    path = Path(text)
    if path.is_file():
        return path.suffix.lower() in (".yaml", ".yml", ".json")
    markers = ("annotations", "Annotations", "data.yaml", "dataset.yaml")
    return path.is_dir() and any((path / m).exists() for m in markers)


def load_images(
    source: str | Path, n: int | None = None, *, split: str = "train", seed: int = 0
) -> list[np.ndarray]:
    """Up to ``n`` BGR images for calibration from an image folder, an image file or a dataset spec.

    A folder that is not a dataset is read recursively as plain images (an ImageFolder). When
    there are more than ``n`` images, a seeded random subset is taken so calibration covers the
    whole set, not its first files. Unreadable images are skipped with a warning.
    """
    path = Path(source)
    is_dataset = is_dataset_spec(source)
    if not is_dataset and not path.exists():
        raise DatasetError(f"{path}: image source does not exist")
    if is_dataset:
        dataset = load_dataset(source, split)
        order = list(range(len(dataset)))
        if n is not None and n < len(order):
            order = sorted(random.Random(seed).sample(order, n))
        out = []
        for i in order:
            try:
                out.append(dataset.load(i).image)
            except ImageReadError as e:
                LOGGER.warning("%s (skipped)", e)
        if not out:
            raise DatasetError(f"{source}: no readable images in split {split!r}")
        return out
    files = [path] if path.is_file() else list_images(path)
    if not files:
        raise DatasetError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    if n is not None and n < len(files):
        files = sorted(random.Random(seed).sample(files, n))
    out = []
    for f in files:
        try:
            out.append(read_image(f))
        except ImageReadError as e:
            LOGGER.warning("%s (skipped)", e)
    if not out:
        raise DatasetError(f"{path}: none of the {len(files)} image files could be decoded")
    return out
