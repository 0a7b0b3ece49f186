"""Training/validation loader: batch format, letterbox meta, determinism, sharding, bad images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from edge_yolo.data import AugmentConfig, DetectionLoader, load_dataset
from edge_yolo.data.augment import letterbox_boxes

torch.set_num_threads(1)


def _colour_dataset(tmp_path: Path, n: int = 6, corrupt: int | None = None) -> Path:
    """YOLO dataset of n solid-colour 48x64 images with one box each; image ``corrupt`` is junk."""
    for i in range(n):
        img = tmp_path / "images" / "train" / f"{i}.png"
        img.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(
            str(img), np.full((48, 64, 3), (255, 0, 0) if i == 0 else (0, 20 * i, 0), np.uint8)
        )
        if i == corrupt:
            img.write_bytes(b"\x89PNG truncated")
        lab = tmp_path / "labels" / "train" / f"{i}.txt"
        lab.parent.mkdir(parents=True, exist_ok=True)
        lab.write_text(f"{i % 2} 0.5 0.5 0.5 0.5\n")
    data = tmp_path / "data.yaml"
    data.write_text("path: .\ntrain: images/train\nval: images/train\nnames: [a, b]\n")
    return data


def test_training_batch_format():
    ds = load_dataset("synthetic:12", imgsz=128)
    loader = DetectionLoader(ds, 128, 4, augment=True, seed=0)
    assert len(loader) == 3
    batches = list(loader)
    assert len(batches) == 3
    for images, targets, meta in batches:
        assert images.shape == (4, 3, 128, 128) and images.dtype == torch.float32
        assert images.min() >= 0.0 and images.max() <= 1.0
        assert targets.dtype == torch.float32 and targets.shape[1] == 6
        assert set(targets[:, 0].long().tolist()) <= {0, 1, 2, 3}
        assert ((targets[:, 1] >= 0) & (targets[:, 1] < len(ds.names))).all()
        xyxy = targets[:, 2:]
        assert ((xyxy >= 0) & (xyxy <= 128)).all()
        assert (xyxy[:, 2:] > xyxy[:, :2]).all()
        assert len(meta["paths"]) == 4 and meta["letterbox"] == [None] * 4
    seen = sorted(i for _, _, m in batches for i in m["indices"])
    assert seen == list(range(12))  # one epoch visits every image once


def test_validation_batches_letterboxed_rgb_in_order(tmp_path):
    ds = load_dataset(_colour_dataset(tmp_path), "val")
    loader = DetectionLoader(ds, 96, 4, augment=False)
    (images, targets, meta), (images2, _, meta2) = list(loader)
    assert meta["indices"] == [0, 1, 2, 3] and meta2["indices"] == [4, 5]  # no shuffling
    assert images2.shape == (2, 3, 96, 96)
    info = meta["letterbox"][0]
    assert info.ratio == pytest.approx(1.5) and info.pad == (0.0, 12.0)
    # Image 0 is pure BGR blue: channel 2 of the RGB tensor, inside the letterbox.
    assert images[0, 2, 48, 48] == 1.0 and images[0, 0, 48, 48] == 0.0
    assert images[0, 0, 5, 48] == pytest.approx(114 / 255)  # padding row
    for b in range(4):
        rows = targets[targets[:, 0] == b]
        sample = ds[meta["indices"][b]]
        expected = letterbox_boxes(sample.boxes, meta["letterbox"][b])
        np.testing.assert_allclose(rows[:, 2:].numpy(), expected, atol=1e-4)
        np.testing.assert_array_equal(rows[:, 1].numpy(), sample.classes)


def _first_batch(loader):
    return next(iter(loader))


def test_deterministic_by_seed_and_epoch():
    ds = load_dataset("synthetic:16", imgsz=96)
    a = DetectionLoader(ds, 96, 4, augment=True, seed=5)
    b = DetectionLoader(ds, 96, 4, augment=True, seed=5)
    ia, ta, ma = _first_batch(a)
    ib, tb, mb = _first_batch(b)
    assert ma["indices"] == mb["indices"]
    assert torch.equal(ia, ib) and torch.equal(ta, tb)
    b.set_epoch(1)
    ic, _, mc = _first_batch(b)
    assert mc["indices"] != ma["indices"] or not torch.equal(ic, ia)
    other = DetectionLoader(ds, 96, 4, augment=True, seed=6)
    assert not torch.equal(_first_batch(other)[0], ia)


def test_same_batches_with_a_worker_process():
    ds = load_dataset("synthetic:8", imgsz=64)
    plain = list(DetectionLoader(ds, 64, 4, augment=True, seed=1))
    forked = list(DetectionLoader(ds, 64, 4, augment=True, seed=1, workers=1))
    for (i0, t0, m0), (i1, t1, m1) in zip(plain, forked):
        assert m0["indices"] == m1["indices"]
        assert torch.equal(i0, i1) and torch.equal(t0, t1)


def test_distributed_shards_are_disjoint():
    ds = load_dataset("synthetic:10", imgsz=64)
    shards = []
    for rank in (0, 1):
        loader = DetectionLoader(ds, 64, 2, augment=True, seed=0, rank=rank, world_size=2)
        loader.set_epoch(3)
        shards.append([i for _, _, m in loader for i in m["indices"]])
    assert len(shards[0]) == len(shards[1]) == 5
    assert sorted(shards[0] + shards[1]) == list(range(10))
    with pytest.raises(ValueError, match="rank=2"):
        DetectionLoader(ds, 64, 2, augment=True, rank=2, world_size=2)


def test_close_mosaic_by_epoch():
    ds = load_dataset("synthetic:4", imgsz=64)
    loader = DetectionLoader(ds, 64, 2, augment=True, hyp=AugmentConfig(close_mosaic=2))
    loader.set_epoch(7, total_epochs=10)
    assert loader.mosaic
    loader.set_epoch(8, total_epochs=10)
    assert not loader.mosaic
    images, _, _ = _first_batch(loader)
    assert images.shape == (2, 3, 64, 64)
    val = DetectionLoader(ds, 64, 2, augment=False)
    assert not val.mosaic


def test_unreadable_image_substituted_in_training_dropped_in_validation(tmp_path):
    ds = load_dataset(_colour_dataset(tmp_path, n=6, corrupt=2), "train")
    hyp = AugmentConfig(mosaic=0.0)  # one image per sample: the bad one is hit exactly once
    loader = DetectionLoader(ds, 64, 3, augment=True, hyp=hyp, seed=0)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [3, 3]  # batches keep their size
    skipped = [p for _, _, m in batches for p, _ in m["skipped"]]
    assert [Path(p).name for p in skipped] == ["2.png"]
    assert ds.report.counts["unreadable_image"] == 1
    list(loader)  # a second epoch does not count the same file again
    assert ds.report.counts["unreadable_image"] == 1

    val = load_dataset(tmp_path / "data.yaml", "val")
    batches = list(DetectionLoader(val, 64, 3, augment=False))
    assert [len(b[0]) for b in batches] == [2, 3]
    assert batches[0][2]["indices"] == [0, 1]
    assert (batches[0][1][:, 0] <= 1).all()  # targets renumbered to the images that remain
    assert val.report.counts["unreadable_image"] == 1


def test_bad_settings_refused():
    ds = load_dataset("synthetic:4", imgsz=64)
    with pytest.raises(ValueError, match="multiple of"):
        DetectionLoader(ds, 100, 2, augment=False)
    with pytest.raises(ValueError, match="batch_size=0"):
        DetectionLoader(ds, 64, 0, augment=False)


def test_validation_pixels_match_the_runtime_preprocess():
    # Evaluation during training must see exactly what the on-device Detector feeds the model.
    from edge_yolo.runtime.processing import preprocess

    ds = load_dataset(Path(__file__).resolve().parent / "fixtures" / "raccoon", "all")
    images, _, meta = next(iter(DetectionLoader(ds, 160, 2, augment=False)))
    for b in range(2):
        blob, info = preprocess(ds[meta["indices"][b]].image, 160)
        np.testing.assert_allclose(images[b].numpy(), blob[0], atol=1e-6)
        assert info == meta["letterbox"][b]
