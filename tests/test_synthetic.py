"""Built-in synthetic dataset: deterministic, disjoint splits, boxes tight to the drawn shapes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge_yolo.data import DatasetError, SyntheticConfig, SyntheticDataset, load_dataset
from edge_yolo.data.synthetic import _SPLIT_IDS, CLASSES, _background


def test_spec_sizes_and_defaults():
    assert len(load_dataset("synthetic")) == 1000
    assert len(load_dataset("synthetic", "val")) == 200
    assert len(load_dataset("synthetic:50")) == 50
    assert len(load_dataset("synthetic:50", "val")) == 10
    assert len(load_dataset("synthetic:3", "val")) == 1
    ds = load_dataset("synthetic:8", imgsz=96, seed=3)
    assert ds.names == list(CLASSES) and ds[0].image.shape == (96, 96, 3)
    for bad in ("synthetic:x", "synthetic:0"):
        with pytest.raises(DatasetError, match="synthetic"):
            load_dataset(bad)
    with pytest.raises(DatasetError, match="unknown split"):
        load_dataset("synthetic", "holdout")
    few = load_dataset("synthetic:4", imgsz=64, max_objects=1)
    assert few.config.max_objects == 1 and all(len(s.boxes) == 1 for s in few)
    with pytest.raises(DatasetError, match=r"synthetic: unknown key\(s\) 'max_objs'; known keys"):
        load_dataset("synthetic", max_objs=2)
    with pytest.raises(DatasetError, match="min_objects <= max_objects"):
        load_dataset("synthetic", max_objects=0)


def test_deterministic_and_splits_disjoint():
    a, b = SyntheticDataset("train", 6, imgsz=64), SyntheticDataset("train", 6, imgsz=64)
    for i in (0, 5, 2):  # any access order gives the same image
        np.testing.assert_array_equal(a[i].image, b[i].image)
        np.testing.assert_array_equal(a[i].boxes, b[i].boxes)
    other_seed = SyntheticDataset("train", 6, imgsz=64, seed=1)
    val = SyntheticDataset("val", 6, imgsz=64)
    train_images = [a[i].image for i in range(6)]
    for other in (other_seed, val):
        for i in range(6):
            assert not any(np.array_equal(other[i].image, t) for t in train_images)


def test_samples_follow_the_contract_and_stated_ranges():
    cfg = SyntheticConfig(imgsz=128)
    ds = SyntheticDataset("train", 40, config=cfg)
    counts = np.zeros(len(CLASSES), int)
    for s in ds:
        assert s.image.dtype == np.uint8 and s.image.shape == (128, 128, 3)
        assert s.boxes.dtype == np.float32 and s.classes.dtype == np.int64
        assert cfg.min_objects <= len(s.boxes) <= cfg.max_objects
        assert (s.boxes[:, :2] >= 0).all() and (s.boxes[:, 2:] <= 128).all()
        sides = np.maximum(s.boxes[:, 2] - s.boxes[:, 0], s.boxes[:, 3] - s.boxes[:, 1])
        # Longest side: at most max_size (stretch can reach 1.25x), at least a few pixels even
        # when occluded.
        assert (sides <= cfg.max_size * 1.25 * 128 + 2).all() and (sides >= 4).all()
        counts += np.bincount(s.classes, minlength=len(CLASSES))
    assert (counts > 0).all()  # every class shows up


def test_boxes_are_tight_to_the_drawn_pixels():
    # Without noise or occlusion, every pixel that differs from the background belongs to an
    # object; each box must touch such pixels on all four sides and together they cover all.
    cfg = dataclasses.replace(SyntheticConfig(imgsz=96), noise=0.0, max_occlusion=0.0)
    ds = SyntheticDataset("val", 30, config=cfg, seed=7)
    for i in range(len(ds)):
        s = ds[i]
        rng = np.random.default_rng([7, _SPLIT_IDS["val"], i])
        background = np.clip(_background(rng, 96), 0, 255).astype(np.uint8)  # first draw
        drawn = (s.image != background).any(2)
        covered = np.zeros_like(drawn)
        for x1, y1, x2, y2 in s.boxes.astype(int):
            inside = drawn[y1:y2, x1:x2]
            assert inside[0].any() and inside[-1].any(), f"image {i}: box not tight in y"
            assert inside[:, 0].any() and inside[:, -1].any(), f"image {i}: box not tight in x"
            covered[y1:y2, x1:x2] = True
        assert not (drawn & ~covered).any(), f"image {i}: drawn pixels outside every box"
