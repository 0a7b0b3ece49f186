"""Dataset readers (YOLO txt, COCO JSON, VOC XML); bad data reported, unusable data refused."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_yolo.data import (
    DatasetError,
    ImageReadError,
    load_dataset,
    load_images,
)
from edge_yolo.data.voc import parse_voc_xml

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "raccoon"
FULL_RACCOON = Path(__file__).resolve().parents[1].parent / "shared/datasets/raccoon"

# raccoon-1.xml: 650x417 image, one raccoon at (81, 88, 522, 408).
RACCOON_1 = np.array([[81, 88, 522, 408]], np.float32)


def _write_image(path: Path, h: int = 48, w: int = 64, colour: tuple = (40, 80, 120)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), colour, np.uint8))


def _yolo_dataset(tmp_path: Path, labels: dict[str, str], *, names=("a", "b")) -> Path:
    """images/{train,val}/<stem>.png (64x48) + labels; returns the data YAML."""
    for split in ("train", "val"):
        for stem, text in labels.items():
            _write_image(tmp_path / "images" / split / f"{stem}.png")
            (tmp_path / "labels" / split).mkdir(parents=True, exist_ok=True)
            (tmp_path / "labels" / split / f"{stem}.txt").write_text(text)
    data = tmp_path / "data.yaml"
    names_map = "\n".join(f"  {i}: {n}" for i, n in enumerate(names))
    data.write_text(f"path: .\ntrain: images/train\nval: images/val\nnames:\n{names_map}\n")
    return data


# ---------------------------------------------------------------------------- VOC


def test_voc_fixture_reads_boxes_as_written():
    train = load_dataset(FIXTURE, "train")
    val = load_dataset(FIXTURE, "val")
    assert train.names == val.names == ["raccoon"]
    paths = {train.image_path(i) for i in range(len(train))}
    vpaths = {val.image_path(i) for i in range(len(val))}
    assert not paths & vpaths and len(paths | vpaths) == 6  # hash split: disjoint, complete
    both = load_dataset(FIXTURE, "all")
    i = [Path(both.image_path(k)).name for k in range(len(both))].index("raccoon-1.jpg")
    sample = both[i]
    assert sample.image.dtype == np.uint8 and sample.image.shape == (417, 650, 3)
    assert sample.boxes.dtype == np.float32 and sample.classes.dtype == np.int64
    np.testing.assert_array_equal(sample.boxes, RACCOON_1)
    np.testing.assert_array_equal(sample.classes, [0])
    assert not both.report


def test_voc_classic_layout_with_image_sets(tmp_path):
    root = tmp_path / "VOC"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    objects = {
        "img1": [("dog", 5, 6, 30, 40)],
        "img2": [("cat", 1, 2, 20, 20), ("dog", 2, 3, 9, 9)],
    }
    for stem, objs in objects.items():
        _write_image(root / "JPEGImages" / f"{stem}.jpg")
        body = "".join(
            f"<object><name>{n}</name><difficult>0</difficult><part><name>paw</name>"
            f"<bndbox><xmin>0</xmin><ymin>0</ymin><xmax>1</xmax><ymax>1</ymax></bndbox></part>"
            f"<bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox>"
            "</object>"
            for n, a, b, c, d in objs
        )
        xml = f"<annotation><size><width>64</width><height>48</height></size>{body}</annotation>"
        (root / "Annotations" / f"{stem}.xml").write_text(xml)
    (root / "ImageSets" / "Main" / "train.txt").write_text("img2\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("img1\n")
    train = load_dataset(root, "train")
    assert train.names == ["cat", "dog"]  # sorted object names; <part> names ignored
    assert len(train) == 1
    s = train[0]
    np.testing.assert_array_equal(s.boxes, [[1, 2, 20, 20], [2, 3, 9, 9]])
    np.testing.assert_array_equal(s.classes, [0, 1])
    val = load_dataset(root, "val")
    assert Path(val[0].path).name == "img1.jpg"


def test_voc_bad_xml_is_reported_with_line(tmp_path, caplog):
    root = tmp_path / "voc"
    shutil.copytree(FIXTURE, root)
    (root / "annotations" / "raccoon-10.xml").write_text("<annotation>\n<size>\n</annotation>")
    good = (root / "annotations" / "raccoon-12.xml").read_text()
    (root / "annotations" / "raccoon-12.xml").write_text(
        good.replace("<name>raccoon</name>", "<name>badger</name>", 1)
    )
    with caplog.at_level(logging.WARNING, logger="edge_yolo.data"):
        ds = load_dataset(root, "all", names=["raccoon"])
    assert ds.report.counts["bad_annotation_file"] == 1
    assert ds.report.counts["unknown_class"] == 1
    bad = ds.report.examples["bad_annotation_file"][0]
    assert bad.path.endswith("raccoon-10.xml") and bad.line == 3
    unknown = ds.report.examples["unknown_class"][0]
    assert unknown.line is not None and "badger" in unknown.message
    assert "raccoon-10.xml:3" in caplog.text
    assert len(ds) == 5  # the malformed file's image is skipped, the other kept without boxes


def test_parse_voc_xml_without_size():
    size, objs = parse_voc_xml(
        b"<annotation>\n<object>\n<name>x</name>\n<bndbox><xmin>1</xmin><ymin>2</ymin>"
        b"<xmax>3</xmax><ymax>4</ymax></bndbox></object></annotation>"
    )
    assert size is None
    assert objs == [{"line": 2, "name": "x", "xmin": "1", "ymin": "2", "xmax": "3", "ymax": "4"}]


# ---------------------------------------------------------------------------- YOLO


def test_yolo_round_trip_and_polygon(tmp_path):
    data = _yolo_dataset(
        tmp_path, {"x": "0 0.5 0.5 0.5 0.25\n1 0.25 0.25 0.5 0.5 0.25 0.5\n"}
    )  # line 2: polygon (0.25,0.25) (0.5,0.5) (0.25,0.5)
    ds = load_dataset(data, "train")
    assert ds.names == ["a", "b"]
    s = ds[0]
    assert s.image.shape == (48, 64, 3)
    np.testing.assert_allclose(s.boxes, [[16, 18, 48, 30], [16, 12, 32, 24]], atol=1e-4)
    np.testing.assert_array_equal(s.classes, [0, 1])
    assert not ds.report


def test_yolo_txt_list_and_background_images(tmp_path):
    data = _yolo_dataset(tmp_path, {"x": "0 0.5 0.5 0.5 0.5\n", "y": ""})
    (tmp_path / "labels" / "train" / "y.txt").unlink()  # no label file: background image
    (tmp_path / "train.txt").write_text("images/train/x.png\nimages/train/y.png\nimages/nope.png\n")
    data.write_text(data.read_text().replace("train: images/train", "train: train.txt"))
    ds = load_dataset(data, "train")
    assert len(ds) == 2
    assert len(ds[1].boxes) == 0
    assert ds.report.counts == {"missing_image": 1}
    assert ds.report.examples["missing_image"][0].line == 3


def test_yolo_bad_lines_reported_not_fatal(tmp_path, caplog):
    text = (
        "0 0.5 0.5 0.2 0.2\n"  # fine
        "0 0.5 0.5 0.2\n"  # 4 fields
        "1 0.5 zero 0.2 0.2\n"  # non-numeric
        "7 0.5 0.5 0.2 0.2\n"  # class out of range
        "1 0.9 0.5 0.4 0.2\n"  # sticks out on the right: clipped
        "0 0.5 0.5 0 0.2\n"  # zero width: dropped
        "\n"
    )
    data = _yolo_dataset(tmp_path, {"x": text})
    with caplog.at_level(logging.WARNING, logger="edge_yolo.data"):
        ds = load_dataset(data, "val")
    counts = ds.report.counts
    assert counts == {
        "bad_field_count": 1,
        "non_numeric": 1,
        "class_out_of_range": 1,
        "box_outside_image": 1,
        "degenerate_box": 1,
    }
    lines = {k: v[0].line for k, v in ds.report.examples.items()}
    assert lines == {
        "bad_field_count": 2,
        "non_numeric": 3,
        "class_out_of_range": 4,
        "box_outside_image": 5,
        "degenerate_box": 6,
    }
    s = ds[0]
    np.testing.assert_allclose(s.boxes, [[25.6, 19.2, 38.4, 28.8], [44.8, 19.2, 64, 28.8]])
    assert "x.txt:2" in caplog.text
    summary = str(ds.report)
    assert "bad_field_count: 1" in summary and "x.txt:4" in summary


def test_corrupt_image_raises_read_error_naming_file(tmp_path):
    data = _yolo_dataset(tmp_path, {"x": "0 0.5 0.5 0.2 0.2\n"})
    (tmp_path / "images" / "train" / "x.png").write_bytes(b"not a png at all")
    ds = load_dataset(data, "train")
    with pytest.raises(ImageReadError, match=r"x\.png"):
        ds.load(0)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("names: [a]\ntrain: [unclosed\n", "not valid YAML"),
        ("names: [a]\ntrain: images/train\n", "missing required key 'val'"),
        ("train: images/train\nval: images/val\n", "missing required key 'names'"),
        ("names: {0: a, 2: b}\ntrain: images/train\nval: images/val\n", "ids must be 0..1"),
        ("names: [a]\nnc: 3\ntrain: images/train\nval: images/val\n", "nc=3"),
    ],
)
def test_unusable_yaml_refused(tmp_path, content, problem):
    data = _yolo_dataset(tmp_path, {"x": "0 0.5 0.5 0.2 0.2\n"})
    data.write_text(content)
    with pytest.raises(DatasetError, match=problem) as e:
        load_dataset(data, "val")
    assert str(data) in str(e.value)


def test_yolo_without_any_label_files_refused(tmp_path):
    data = _yolo_dataset(tmp_path, {"x": ""})
    shutil.rmtree(tmp_path / "labels")
    with pytest.raises(DatasetError, match="has a label file"):
        load_dataset(data, "train")


def test_missing_and_empty_sources_refused(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nowhere.yaml")
    with pytest.raises(DatasetError, match="not a dataset folder"):
        load_dataset(tmp_path)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match="no .xml annotation files"):
        load_dataset(tmp_path)


# ---------------------------------------------------------------------------- COCO


def _coco(tmp_path: Path, split: str, anns: list[dict], images=None) -> Path:
    img_dir = tmp_path / "images" / split
    for name in ("a.jpg", "b.jpg"):
        _write_image(img_dir / name)
    data = {
        "images": images
        or [
            {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
            {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48},
        ],
        "annotations": anns,
        "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}],
    }
    path = tmp_path / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_coco_categories_to_contiguous_ids(tmp_path):
    anns = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 5, 20, 10], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 8, 8]},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 1},
    ]
    path = _coco(tmp_path, "train", anns)
    ds = load_dataset(path, "train")
    assert ds.names == ["three", "seven"]  # sorted by category id
    by_name = {Path(ds.image_path(i)).name: ds[i] for i in range(len(ds))}
    np.testing.assert_array_equal(by_name["a.jpg"].boxes, [[10, 5, 30, 15], [0, 0, 8, 8]])
    np.testing.assert_array_equal(by_name["a.jpg"].classes, [1, 0])
    assert len(by_name["b.jpg"].boxes) == 0  # crowd annotation skipped
    # The train file asked for val swaps to its sibling; a folder spec finds it too.
    _coco(tmp_path, "val", anns[:1])
    val = load_dataset(path, "val")
    assert "instances_val.json" in val.source
    assert len(load_dataset(tmp_path, "val")) == 2


def test_coco_bad_annotations_reported(tmp_path):
    anns = [
        {"id": 1, "image_id": 9, "category_id": 7, "bbox": [1, 1, 5, 5]},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5]},
        {"id": 3, "image_id": 1, "category_id": 7, "bbox": [1, "x", 5, 5]},
        {"id": 4, "image_id": 1, "category_id": 99, "bbox": [1, 1, 5, 5]},
        {"id": 5, "image_id": 1, "category_id": 3, "bbox": [50, 40, 30, 30]},
        {"id": 6, "image_id": 2, "category_id": 3, "bbox": [5, 5, 0, 3]},
    ]
    images = [
        {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
        {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48},
        {"id": 3, "file_name": "gone.jpg", "width": 64, "height": 48},
    ]
    ds = load_dataset(_coco(tmp_path, "train", anns, images), "train")
    assert ds.report.counts == {
        "unknown_image_id": 1,
        "bad_field_count": 1,
        "non_numeric": 1,
        "class_out_of_range": 1,
        "box_outside_image": 1,
        "degenerate_box": 1,
        "missing_image": 1,
    }
    assert "annotation id 3" in ds.report.examples["non_numeric"][0].message
    assert len(ds) == 2
    np.testing.assert_array_equal(ds[0].boxes, [[50, 40, 64, 48]])


@pytest.mark.parametrize(
    ("text", "problem"),
    [("{not json", "not valid JSON"), ('{"images": [], "annotations": []}', "'categories'")],
)
def test_unusable_json_refused(tmp_path, text, problem):
    path = tmp_path / "instances.json"
    path.write_text(text)
    with pytest.raises(DatasetError, match=problem) as e:
        load_dataset(path)
    assert str(path) in str(e.value)


# ---------------------------------------------------------------------------- calibration images


def test_load_images_from_folder_and_spec(tmp_path):
    images = load_images(FIXTURE / "images", 3)
    assert len(images) == 3
    assert all(im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3 for im in images)
    assert len(load_images(FIXTURE / "images")) == 6
    assert len(load_images("synthetic:20", 4)) == 4
    assert len(load_images(FIXTURE, split="all")) == 6  # a VOC folder is read as a dataset
    shutil.copytree(FIXTURE / "images", tmp_path / "imgs")
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8garbage")
    assert len(load_images(tmp_path / "imgs")) == 6  # the broken one skipped
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        load_images(tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        load_images(tmp_path / "nope")


# ---------------------------------------------------------------------------- the whole raccoon set


@pytest.mark.skipif(not FULL_RACCOON.is_dir(), reason="shared raccoon dataset not present")
def test_full_raccoon_splits():
    train, val = load_dataset(FULL_RACCOON, "train"), load_dataset(FULL_RACCOON, "val")
    assert (len(train), len(val)) == (160, 40)
    tp = {train.image_path(i) for i in range(len(train))}
    vp = {val.image_path(i) for i in range(len(val))}
    assert not tp & vp
    boxes = sum(len(d.annotations(i)[0]) for d in (train, val) for i in range(len(d)))
    assert boxes == 217
    assert not train.report and not val.report


# ---------------------------------------------------------------------------- edge-yolo data


def test_data_command(tmp_path, capsys):
    from edge_yolo.cli import main

    preview = tmp_path / "grid.png"
    assert (
        main(["data", "synthetic:8", "--imgsz", "64", "--preview", str(preview), "--num", "4"]) == 0
    )
    grid = cv2.imread(str(preview))
    assert grid.shape == (128, 128, 3)
    assert "no problems found" in capsys.readouterr().out

    data = _yolo_dataset(tmp_path / "bad", {"x": "0 0.5 0.5 0.2 0.2\n9 0.5 0.5 0.2 0.2\n"})
    (tmp_path / "bad" / "images" / "train" / "x.png").write_bytes(b"junk")
    assert main(["data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "class_out_of_range: 1" in out and "unreadable_image: 1" in out
    # the only labelled image cannot be decoded: its box is not counted as training data
    assert "1 images cannot be decoded" in out and "a  0 boxes" in out
    assert main(["data", str(data), "--labels-only"]) == 0
    assert "a  1 boxes" in capsys.readouterr().out
    assert main(["data", str(data), "--strict"]) == 1
    assert main(["data", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: dataset does not exist" in capsys.readouterr().err


def test_iteration_skips_and_reports_unreadable_images(tmp_path):
    data = _yolo_dataset(tmp_path, {"x": "0 0.5 0.5 0.2 0.2\n", "y": "1 0.5 0.5 0.2 0.2\n"})
    (tmp_path / "images" / "val" / "x.png").write_bytes(b"")
    ds = load_dataset(data, "val")
    for _ in range(2):  # e.g. two validation passes
        assert [Path(s.path).name for s in ds] == ["y.png"]
    assert ds.report.counts == {"unreadable_image": 1}


# ---------------------------------------------------------------- datasets that cannot train


def _train(data, tmp_path, capsys):
    from edge_yolo.cli import main

    code = main(["train", "--data", str(data), "--imgsz", "64", "--batch", "2", "--epochs", "1",
                 "--model", "gelan-t", "--out", str(tmp_path / "run"), "--no-progress",
                 "--no-plots", "--workers", "0"])
    captured = capsys.readouterr()
    return code, captured


def test_a_dataset_of_corrupt_images_is_refused_before_training(tmp_path, capsys):
    data = _yolo_dataset(tmp_path, {"x": "0 0.5 0.5 0.2 0.2\n", "y": "1 0.5 0.5 0.2 0.2\n"})
    for png in (tmp_path / "images").rglob("*.png"):
        png.write_bytes(b"\x89PNG but nothing more")
    code, captured = _train(data, tmp_path, capsys)
    err = captured.err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "none of its 2 images can be decoded" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_dataset_without_valid_boxes_is_refused_before_training(tmp_path, capsys):
    data = _yolo_dataset(tmp_path, {"x": "7 0.5 0.5 0.2 0.2\n", "y": "0 0.5 0.5 oops 0.2\n"})
    code, captured = _train(data, tmp_path, capsys)
    err = captured.err.strip().splitlines()[-1]
    assert code == 2 and "no valid boxes in 2 images (2 invalid label entries dropped)" in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_mostly_invalid_labels_get_a_loud_warning_with_the_counts(tmp_path):
    from edge_yolo.data.dataset import check_trainable

    labels = {"x": "0 0.5 0.5 0.2 0.2\n" + "9 0.5 0.5 0.2 0.2\n" * 3}
    dataset = load_dataset(_yolo_dataset(tmp_path, labels), "train")
    warning = check_trainable(dataset)
    assert warning and "3 label entries were dropped and 1 valid boxes remain" in warning
    good = load_dataset(_yolo_dataset(tmp_path / "g", {"x": "0 0.5 0.5 0.2 0.2\n"}), "train")
    assert check_trainable(good) is None
