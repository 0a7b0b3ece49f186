"""Augmentation geometry: after every transform the boxes still enclose their objects' pixels.

The images are filled rectangles of known, distinct colours on a grey ground, so the true
extent of each object after a transform can be read back from the pixels and compared with
the transformed boxes.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_yolo.data import AugmentConfig, Augmenter, Sample
from edge_yolo.data.augment import (
    PAD_VALUE,
    affine_matrix,
    flip_lr,
    flip_ud,
    hsv_jitter,
    letterbox_sample,
    mixup,
    mosaic4,
    random_affine,
    resize_long_side,
)

GROUND = 60
COLOURS = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255), (255, 0, 255), (255, 255, 0)]


def _scene(h: int, w: int, boxes: list[tuple[int, int, int, int]], first_colour: int = 0):
    image = np.full((h, w, 3), GROUND, np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        image[y1:y2, x1:x2] = COLOURS[first_colour + k]
    classes = np.arange(first_colour, first_colour + len(boxes), dtype=np.int64)
    return image, np.array(boxes, np.float32).reshape(-1, 4), classes


def _extent(image: np.ndarray, colour_index: int, tol: int = 60) -> np.ndarray | None:
    """Bounding box (pixel edges) of the pixels close to a colour, or None if absent."""
    diff = np.abs(image.astype(int) - COLOURS[colour_index]).max(2)
    ys, xs = np.nonzero(diff < tol)
    if not len(xs):
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def _assert_tight(image, boxes, classes, atol=2.0):
    for box, cls in zip(boxes, classes):
        extent = _extent(image, int(cls))
        assert extent is not None, f"class {cls}: box {box} but no pixels of its colour"
        np.testing.assert_allclose(box, extent, atol=atol, err_msg=f"class {cls}")


def test_reference_defaults_and_checks():
    hyp = AugmentConfig()
    assert (hyp.hsv_h, hyp.hsv_s, hyp.hsv_v) == (0.015, 0.7, 0.4)
    assert (hyp.translate, hyp.scale, hyp.fliplr, hyp.mosaic, hyp.mixup) == (
        0.1,
        0.9,
        0.5,
        1.0,
        0.15,
    )
    assert hyp.close_mosaic == 15
    assert AugmentConfig.from_dict({"mixup": 0.0}).mixup == 0.0
    with pytest.raises(
        ValueError, match=r"recipe.yaml: unknown key\(s\) 'mosiac'; known keys: close_mosaic, "
    ):
        AugmentConfig.from_dict({"mosiac": 1.0}, where="recipe.yaml")
    with pytest.raises(ValueError, match="probability"):
        AugmentConfig(fliplr=1.5)
    with pytest.raises(ValueError, match="recipe.yaml: augmentation scale must be in"):
        AugmentConfig.from_dict({"scale": 1.2}, where="recipe.yaml")


def test_letterbox_maps_by_ratio_and_pad():
    image, boxes, classes = _scene(60, 120, [(10, 5, 40, 30), (70, 20, 118, 58)])
    out, new, info = letterbox_sample(image, boxes, 96)
    assert out.shape == (96, 96, 3)
    assert info.ratio == pytest.approx(0.8) and info.pad == (0.0, 24.0)
    np.testing.assert_allclose(new, boxes * 0.8 + [0, 24, 0, 24])
    _assert_tight(out, new, classes, atol=1.0)
    assert (out[:23] == PAD_VALUE).all() and (out[-23:] == PAD_VALUE).all()


def test_resize_long_side():
    image, boxes, classes = _scene(50, 100, [(20, 10, 60, 40)])
    out, new = resize_long_side(image, boxes, 64)
    assert out.shape == (32, 64, 3)
    _assert_tight(out, new, classes, atol=1.0)


def test_flips():
    image, boxes, classes = _scene(40, 100, [(10, 5, 30, 20), (60, 22, 99, 39)])
    out, new = flip_lr(image, boxes)
    np.testing.assert_array_equal(new[:, 0], 100 - boxes[:, 2])
    np.testing.assert_array_equal(new[:, 2], 100 - boxes[:, 0])
    np.testing.assert_array_equal(new[:, [1, 3]], boxes[:, [1, 3]])
    _assert_tight(out, new, classes, atol=0)
    out, new = flip_ud(image, boxes)
    np.testing.assert_array_equal(new[:, 1], 40 - boxes[:, 3])
    _assert_tight(out, new, classes, atol=0)


@pytest.mark.parametrize(
    "hyp",
    [
        AugmentConfig(translate=0.1, scale=0.5),
        AugmentConfig(degrees=25.0, shear=5.0, translate=0.0, scale=0.3),
    ],
    ids=["scale-translate", "rotate-shear"],
)
def test_random_affine_boxes_follow_pixels(hyp):
    rng = np.random.default_rng(0)
    for _ in range(10):
        image, boxes, classes = _scene(96, 96, [(20, 20, 50, 40), (55, 50, 80, 90)])
        out, new, cls = random_affine(image, boxes, classes, rng, 96, hyp)
        assert out.shape == (96, 96, 3)
        assert ((new >= 0) & (new <= 96)).all()
        # A rotated rectangle's warped corners bound its pixels exactly (up to resampling).
        _assert_tight(out, new, cls, atol=2.0)


def test_random_affine_drops_boxes_pushed_out():
    image, boxes, classes = _scene(64, 64, [(0, 0, 8, 8), (20, 20, 44, 44)])
    hyp = AugmentConfig(translate=0.0, scale=0.8)
    zoomed = 0
    for seed in range(40):
        # Same seed, same draws: affine_matrix tells the scale random_affine will use.
        _, s = affine_matrix(np.random.default_rng(seed), (64, 64), 64, scale=0.8)
        out, new, cls = random_affine(image, boxes, classes, np.random.default_rng(seed), 64, hyp)
        if s > 1.4:  # the corner box lands entirely left of / above the frame
            np.testing.assert_array_equal(cls, [1])
            zoomed += 1
        elif 0.4 < s < 1.0:  # shrinking keeps everything in view (and over 2 px)
            np.testing.assert_array_equal(cls, [0, 1])
        _assert_tight(out, new, cls, atol=2.0)
    assert zoomed


def test_mosaic_places_boxes_where_the_pixels_went():
    rng = np.random.default_rng(3)
    tiles = [
        _scene(64, 48, [(5, 5, 40, 30)], first_colour=0),
        _scene(40, 64, [(10, 10, 60, 35)], first_colour=1),
        _scene(64, 64, [(30, 30, 60, 60)], first_colour=2),
        _scene(50, 64, [(2, 20, 30, 45)], first_colour=3),
    ]
    canvas, boxes, classes = mosaic4(tiles, 64, rng)
    assert canvas.shape == (128, 128, 3)
    for box, cls in zip(boxes, classes):
        extent = _extent(canvas, int(cls))
        # The tile may be cut by the canvas edge: the clipped box still bounds what is left.
        np.testing.assert_allclose(box, extent, atol=0)


def test_mixup_keeps_both_geometries():
    a = _scene(32, 32, [(2, 2, 10, 10)], first_colour=0)
    b = _scene(32, 32, [(20, 20, 30, 30)], first_colour=1)
    image, boxes, classes = mixup(a, b, 0.5)
    np.testing.assert_array_equal(boxes, np.concatenate([a[1], b[1]]))
    np.testing.assert_array_equal(classes, [0, 1])
    assert image[5, 5].tolist() == [30, 30, 158]  # half red over half grey
    with pytest.raises(ValueError, match="one shape"):
        mixup(a, _scene(16, 16, []), 0.5)


def test_hsv_jitter():
    rng = np.random.default_rng(0)
    image, _, _ = _scene(16, 16, [(0, 0, 8, 16)])
    assert hsv_jitter(image, rng, 0, 0, 0) is image
    out = hsv_jitter(image, rng, 0.015, 0.7, 0.4)
    assert out.shape == image.shape and out.dtype == np.uint8
    grey = out[:, 8:].reshape(-1, 3)
    assert (grey.max(1) - grey.min(1) <= 1).all()  # saturation 0 stays grey
    red = out[:, :8].reshape(-1, 3)
    assert (red[:, 2] > red[:, 1] + 50).all()  # a small hue gain keeps red red


class _Rectangles:
    """Tiny in-memory dataset of coloured rectangles (one colour per class)."""

    names = [str(i) for i in range(len(COLOURS))]

    def __init__(self) -> None:
        rng = np.random.default_rng(1)
        self.samples = []
        for i in range(6):
            h, w = rng.integers(60, 120, 2)
            x1, y1 = rng.integers(0, w // 2), rng.integers(0, h // 2)
            x2, y2 = x1 + rng.integers(15, w // 2), y1 + rng.integers(15, h // 2)
            image, boxes, classes = _scene(h, w, [(x1, y1, x2, y2)], first_colour=i)
            self.samples.append(Sample(image, boxes, classes, f"rect{i}"))

    def __call__(self, i: int) -> Sample:
        return self.samples[i]


@pytest.mark.parametrize("mosaic", [True, False])
def test_augmenter_pipeline_geometry(mosaic):
    # Colour jitter off so colours identify classes; mixup off so pixels are not blended.
    hyp = AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0, mixup=0.0, mosaic=1.0 if mosaic else 0.0)
    aug = Augmenter(96, hyp)
    data = _Rectangles()
    seen = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        image, boxes, classes = aug(seed % 6, data, 6, rng)
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        assert boxes.dtype == np.float32 and classes.dtype == np.int64
        for box, cls in zip(boxes, classes):
            extent = _extent(image, int(cls))
            # A class may appear twice in one mosaic (same image drawn again): its pixels
            # then span both, so each box must lie within the extent and touch pixels.
            assert extent is not None
            assert (box[:2] >= extent[:2] - 2).all() and (box[2:] <= extent[2:] + 2).all()
            seen += 1
        if not mosaic:
            _assert_tight(image, boxes, classes, atol=2.0)
    assert seen >= 8


def test_close_mosaic_switches_to_single_images():
    hyp = AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0, translate=0, scale=0, fliplr=0)
    aug = Augmenter(96, hyp)
    data = _Rectangles()
    mosaics = [aug(0, data, 6, np.random.default_rng(seed))[2] for seed in range(5)]
    assert any(len(set(c.tolist())) > 1 for c in mosaics)  # mosaic on: partners' classes appear
    aug.close_mosaic()
    assert not aug.mosaic_enabled
    for seed in range(5):
        image, boxes, classes = aug(2, data, 6, np.random.default_rng(seed))
        np.testing.assert_array_equal(classes, [2])  # only the asked-for image, no partners
        resized = resize_long_side(data(2).image, data(2).boxes, 96)
        expected, eboxes, _ = letterbox_sample(*resized, 96)
        np.testing.assert_array_equal(image, expected)  # no scale/translate/flip: plain letterbox
        np.testing.assert_allclose(boxes, eboxes, atol=1e-4)
