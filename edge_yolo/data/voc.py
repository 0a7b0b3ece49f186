"""Pascal VOC reader: ``images/`` + ``annotations/`` or ``JPEGImages/`` + ``Annotations/``.

Layouts, splits and class names as described in :mod:`.formats`; the XML is parsed with
expat (no entity expansion, no external references) and every bad object is reported by
file.
"""

from __future__ import annotations

import xml.parsers.expat
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import (
    IMAGE_SUFFIXES,
    ImageFileDataset,
    LabeledImage,
    check_boxes,
    empty_boxes,
)
from .report import DataReport, DatasetError
from .text import read_text


def parse_voc_xml(data: bytes) -> tuple[tuple[float, float] | None, list[dict[str, Any]]]:
    """Parse a VOC annotation: ((width, height) or None, objects with their XML line numbers).

    expat rather than ElementTree: it gives each object's line number for the bad-data report.
    Raises ``xml.parsers.expat.ExpatError`` (with a line number) on malformed XML.
    """
    parser = xml.parsers.expat.ParserCreate()
    stack: list[str] = []
    text: list[str] = []
    size: dict[str, str] = {}
    objects: list[dict[str, Any]] = []

    def start(tag: str, _attrs: dict[str, str]) -> None:
        stack.append(tag)
        text.clear()
        if stack[-2:] == ["annotation", "object"]:
            objects.append({"line": parser.CurrentLineNumber})

    def end(tag: str) -> None:
        value = "".join(text).strip()
        path = stack[-3:]
        if path[-2:] in (["size", "width"], ["size", "height"]) and len(stack) == 3:
            size[tag] = value
        elif objects and (
            (len(stack) == 3 and stack[1] == "object" and tag in ("name", "difficult"))
            or (len(stack) == 4 and path[:2] == ["object", "bndbox"])
        ):
            objects[-1][tag] = value
        stack.pop()
        text.clear()

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    parser.Parse(data, True)
    wh = None
    try:
        w, h = float(size["width"]), float(size["height"])
        if w > 0 and h > 0:
            wh = (w, h)
    except (KeyError, ValueError):
        pass  # many VOC exports write 0 or omit <size>; boxes are then clipped at load time
    return wh, objects


def _voc_layout(root: Path) -> tuple[Path, Path, Path | None, bool]:
    """(image dir, annotation dir, split dir, split files hold stems) of a VOC folder."""
    if (root / "Annotations").is_dir():
        return root / "JPEGImages", root / "Annotations", root / "ImageSets" / "Main", True
    if (root / "annotations").is_dir():
        return root / "images", root / "annotations", root / "splits", False
    raise DatasetError(
        f"{root}: not a VOC folder (expected annotations/ + images/ or Annotations/ + JPEGImages/)"
    )


def _voc_names(root: Path, xmls: list[Path]) -> list[str]:
    for fname in ("classes.txt", "labels.txt"):
        f = root / fname
        if f.is_file():
            return [n.strip() for n in read_text(f, "class names").splitlines() if n.strip()]
    found: set[str] = set()
    for x in xmls:
        try:
            _, objs = parse_voc_xml(x.read_bytes())
        except (OSError, xml.parsers.expat.ExpatError):
            continue  # reported when the split is read
        found.update(o["name"] for o in objs if o.get("name"))
    return sorted(found)


def load_voc(
    root: str | Path,
    split: str = "train",
    *,
    names: Sequence[str] | None = None,
    skip_difficult: bool = False,
    val_fraction: float = 0.2,
) -> ImageFileDataset:
    """Read a Pascal VOC folder (see the module docstring for the layouts)."""
    root = Path(root)
    image_dir, ann_dir, split_dir, stems = _voc_layout(root)
    if not image_dir.is_dir():
        raise DatasetError(f"{root}: image folder {image_dir} does not exist")
    xmls = sorted(ann_dir.glob("*.xml"))
    if not xmls:
        raise DatasetError(f"{ann_dir}: no .xml annotation files")
    names = list(names) if names else _voc_names(root, xmls)
    if not names:
        raise DatasetError(f"{root}: no object names in any annotation")
    class_of = {n: k for k, n in enumerate(names)}
    report = DataReport(source=f"{root} [{split}]")

    split_file = split_dir / f"{split}.txt" if split_dir is not None else None
    if split == "all":
        selected = xmls
    elif split_file is not None and split_file.is_file():
        lines = read_text(split_file, "split list").splitlines()
        wanted = [s.strip() for s in lines if s.strip()]
        by_stem = {x.stem: x for x in xmls}
        selected = []
        for n, entry in enumerate(wanted, 1):
            stem = entry.split()[0] if stems else Path(entry).stem
            if stem not in by_stem:
                report.add("missing_image", split_file, f"{entry!r} has no annotation file", n)
                continue
            selected.append(by_stem[stem])
    elif split in ("train", "val"):
        # No published split: a stable hash of the name keeps train and val disjoint and
        # the same across runs and machines.
        in_val = [zlib.crc32(x.stem.encode()) % 1000 < val_fraction * 1000 for x in xmls]
        selected = [x for x, v in zip(xmls, in_val) if v == (split == "val")]
    else:
        raise DatasetError(f"{root}: no split file {split_file} for split {split!r}")

    items = []
    for x in selected:
        try:
            size, objs = parse_voc_xml(x.read_bytes())
        except OSError as e:
            report.add("bad_annotation_file", x, f"cannot read ({e})")
            continue
        except xml.parsers.expat.ExpatError as e:
            reason = xml.parsers.expat.errors.messages[e.code]
            report.add("bad_annotation_file", x, f"malformed XML ({reason})", e.lineno)
            continue
        image = _voc_image(image_dir, x.stem)
        if image is None:
            report.add("missing_image", x, f"no image named {x.stem}.* in {image_dir}")
            continue
        boxes, classes, lines = [], [], []
        for o in objs:
            if skip_difficult and o.get("difficult", "0") == "1":
                continue
            if o.get("name") not in class_of:
                message = f"object name {o.get('name')!r} not in {names}"
                report.add("unknown_class", x, message, o["line"])
                continue
            try:
                box = [float(o[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
            except KeyError as e:
                report.add("bad_field_count", x, f"object without bndbox/{e.args[0]}", o["line"])
                continue
            except ValueError:
                report.add("non_numeric", x, "non-numeric bndbox coordinate", o["line"])
                continue
            boxes.append(box)
            classes.append(class_of[o["name"]])
            lines.append(o["line"])
        b, c = empty_boxes()
        if boxes:
            b, c = check_boxes(
                np.array(boxes, np.float32),
                np.array(classes),
                num_classes=len(names),
                size=size,
                path=x,
                report=report,
                lines=lines,
            )
        items.append(LabeledImage(image, b, c))
    return ImageFileDataset(items, names, source=f"{root} [{split}]", report=report)


def _voc_image(image_dir: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES):
        p = image_dir / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


# ---------------------------------------------------------------------------- entry points
