"""Training augmentation: mosaic, mixup, random affine, HSV jitter, horizontal flip, letterbox.

Every transform takes and returns BGR uint8 images with float32 xyxy pixel boxes and int64
classes, so each can be tested on its own geometry. :class:`Augmenter` chains them the way
the YOLOv9 reference recipe does: mosaic of 4 (probability ``mosaic``) then random affine
that crops the 2S mosaic back to S, optionally mixed with a second mosaic; otherwise the image
is resized, letterboxed and given the random affine alone; then HSV jitter and flips.

Mixup keeps both images' geometry and all their boxes and blends them with a ratio drawn
from Beta(``mixup_beta``, ``mixup_beta``). The default 32 keeps the ratio near 0.5 (the
reference's choice): the targets carry no per-box weight, so both images must stay clearly
visible or the faint one's boxes teach the model to see objects that are not there.
Beta(1.5, 1.5) (the "bag of freebies" blend) is one setting away.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..errors import refuse_unknown_keys
from ..runtime.processing import LetterboxInfo, letterbox
from .dataset import Sample

PAD_VALUE = 114


@dataclass
class AugmentConfig:
    """Augmentation hyper-parameters; defaults are the YOLOv9 reference recipe."""

    hsv_h: float = 0.015  # hue gain (fraction of the hue circle)
    hsv_s: float = 0.7  # saturation gain
    hsv_v: float = 0.4  # value gain
    degrees: float = 0.0  # rotation range, +- degrees
    translate: float = 0.1  # translation range, +- fraction of the output size
    scale: float = 0.9  # scale range, 1 +- scale
    shear: float = 0.0  # shear range, +- degrees
    fliplr: float = 0.5  # horizontal flip probability
    flipud: float = 0.0  # vertical flip probability
    mosaic: float = 1.0  # mosaic probability
    mixup: float = 0.15  # probability of mixing a mosaic with a second one
    mixup_beta: float = 32.0  # mixup ratio ~ Beta(mixup_beta, mixup_beta)
    close_mosaic: int = 15  # mosaic and mixup off for the last N epochs
    min_box_size: float = 2.0  # boxes narrower or shorter than this (pixels) are dropped
    min_area_ratio: float = 0.1  # ...or keeping less than this share of their scaled area
    max_aspect: float = 100.0  # ...or more elongated than this

    def __post_init__(self) -> None:
        for name in ("fliplr", "flipud", "mosaic", "mixup"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"augmentation {name} is a probability, got {getattr(self, name)}")
        for name in ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "shear", "min_box_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"augmentation {name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.scale < 1:
            raise ValueError(f"augmentation scale must be in [0, 1), got {self.scale}")
        if self.mixup_beta <= 0 or self.close_mosaic < 0:
            raise ValueError("augmentation mixup_beta must be > 0 and close_mosaic >= 0")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "augmentation") -> AugmentConfig:
        """Build from a recipe mapping, refusing unknown keys with a message naming them."""
        refuse_unknown_keys(values, {f.name for f in dataclasses.fields(cls)}, where)
        try:
            return cls(**values)
        except (TypeError, ValueError) as e:  # TypeError: a quoted number compared with 0
            raise ValueError(f"{where}: {e}") from e


# ---------------------------------------------------------------------------- single transforms


def letterbox_sample(
    image: np.ndarray, boxes: np.ndarray, size: int, *, scaleup: bool = True
) -> tuple[np.ndarray, np.ndarray, LetterboxInfo]:
    """Letterbox to ``size`` x ``size`` (the runtime's own letterbox) and map the boxes with it."""
    out, info = letterbox(image, size, color=PAD_VALUE, scaleup=scaleup)
    return out, letterbox_boxes(boxes, info), info


def letterbox_boxes(boxes: np.ndarray, info: LetterboxInfo) -> np.ndarray:
    """Original-image xyxy -> network-input xyxy: ``xy * ratio + pad``."""
    pad = np.array([*info.pad, *info.pad], np.float32)
    return (boxes * np.float32(info.ratio) + pad).astype(np.float32)


def resize_long_side(
    image: np.ndarray, boxes: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Resize so the longer side is ``size`` (aspect kept), scaling the boxes with it."""
    h, w = image.shape[:2]
    r = size / max(h, w)
    if r != 1:
        nw, nh = max(1, round(w * r)), max(1, round(h * r))
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        boxes = boxes * np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
    return image, boxes.astype(np.float32)


def hsv_jitter(
    image: np.ndarray, rng: np.random.Generator, hgain: float, sgain: float, vgain: float
) -> np.ndarray:
    """Random hue shift and saturation/value scaling (through lookup tables: fast on uint8)."""
    if not (hgain or sgain or vgain):
        return image
    gh, gs, gv = rng.uniform(-1, 1, 3) * (hgain, sgain, vgain) + 1
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x * gh) % 180).astype(np.uint8)  # OpenCV's 8-bit hue spans 0..179
    lut_s = np.clip(x * gs, 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gv, 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def flip_lr(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right: ``x1' = W - x2``, ``x2' = W - x1``."""
    w = image.shape[1]
    boxes = boxes.copy()
    boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    return np.ascontiguousarray(image[:, ::-1]), boxes


def flip_ud(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror top-bottom: ``y1' = H - y2``, ``y2' = H - y1``."""
    h = image.shape[0]
    boxes = boxes.copy()
    boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
    return np.ascontiguousarray(image[::-1]), boxes


def affine_matrix(
    rng: np.random.Generator,
    in_shape: tuple[int, int],
    size: int,
    *,
    degrees: float = 0.0,
    translate: float = 0.0,
    scale: float = 0.0,
    shear: float = 0.0,
) -> tuple[np.ndarray, float]:
    """A random 2x3 affine taking an ``in_shape`` (h, w) image to a ``size`` square; and its scale.

    The input centre goes to the output centre, then rotation/scale and shear about it, then
    a translation of up to ``translate * size``: on a 2S mosaic this is also the crop to S.
    """
    h, w = in_shape
    centre = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1]], np.float64)
    s = rng.uniform(1 - scale, 1 + scale)
    rot = np.eye(3)
    rot[:2] = cv2.getRotationMatrix2D((0, 0), rng.uniform(-degrees, degrees), s)
    sh = np.eye(3)
    sh[0, 1] = math.tan(math.radians(rng.uniform(-shear, shear)))
    sh[1, 0] = math.tan(math.radians(rng.uniform(-shear, shear)))
    move = np.eye(3)
    move[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * size
    move[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * size
    return (move @ sh @ rot @ centre)[:2], s


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp the 4 corners of each box, take their bounding box and clip it to the output."""
    if not len(boxes):
        return boxes.reshape(0, 4).astype(np.float32)
    x1, y1, x2, y2 = boxes.T
    corners = np.stack([x1, y1, x2, y1, x2, y2, x1, y2], 1).reshape(-1, 4, 2)
    warped = corners @ matrix[:, :2].T + matrix[:, 2]
    out = np.concatenate([warped.min(1), warped.max(1)], 1)
    return np.clip(out, 0, size).astype(np.float32)


def box_candidates(
    before: np.ndarray,
    after: np.ndarray,
    scale: float,
    *,
    min_size: float = 2.0,
    min_area_ratio: float = 0.1,
    max_aspect: float = 100.0,
) -> np.ndarray:
    """Mask of transformed boxes worth keeping: big enough, not mostly cropped, not a sliver."""
    w0, h0 = (before[:, 2] - before[:, 0]) * scale, (before[:, 3] - before[:, 1]) * scale
    w1, h1 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(w1 / (h1 + 1e-9), h1 / (w1 + 1e-9))
    return (
        (w1 > min_size)
        & (h1 > min_size)
        & (w1 * h1 / (w0 * h0 + 1e-9) > min_area_ratio)
        & (aspect < max_aspect)
    )


def random_affine(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    rng: np.random.Generator,
    size: int,
    hyp: AugmentConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random rotation/scale/shear/translation to a ``size`` square; boxes warped and filtered."""
    matrix, s = affine_matrix(
        rng,
        image.shape[:2],
        size,
        degrees=hyp.degrees,
        translate=hyp.translate,
        scale=hyp.scale,
        shear=hyp.shear,
    )
    out = cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=(PAD_VALUE,) * 3
    )
    new = transform_boxes(boxes, matrix, size)
    keep = box_candidates(
        boxes,
        new,
        s,
        min_size=hyp.min_box_size,
        min_area_ratio=hyp.min_area_ratio,
        max_aspect=hyp.max_aspect,
    )
    return out, new[keep], classes[keep]


def mosaic4(
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    size: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tile 4 images (long side already ``size``) around a random centre of a 2S canvas.

    Image k fills the quadrant top-left, top-right, bottom-left, bottom-right of the centre,
    touching it with its inner corner; what sticks out of the canvas is cut off and the boxes
    are shifted with their pixels and clipped to the canvas.
    """
    if len(samples) != 4:
        raise ValueError(f"mosaic4 needs 4 images, got {len(samples)}")
    s2 = 2 * size
    canvas = np.full((s2, s2, 3), PAD_VALUE, np.uint8)
    xc, yc = (int(v) for v in rng.uniform(size * 0.5, size * 1.5, 2))
    all_boxes, all_classes = [], []
    for k, (img, boxes, classes) in enumerate(samples):
        h, w = img.shape[:2]
        # Canvas region of this tile (x0, y0, x1, y1), before cutting to the canvas.
        x0 = xc - w if k in (0, 2) else xc
        y0 = yc - h if k in (0, 1) else yc
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + w, s2), min(y0 + h, s2)
        canvas[cy0:cy1, cx0:cx1] = img[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        shifted = boxes + np.array([x0, y0, x0, y0], np.float32)
        all_boxes.append(shifted)
        all_classes.append(classes)
    boxes = np.clip(np.concatenate(all_boxes), 0, s2).astype(np.float32)
    classes = np.concatenate(all_classes).astype(np.int64)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return canvas, boxes[keep], classes[keep]


def mixup(
    a: tuple[np.ndarray, np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray, np.ndarray],
    ratio: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blend two same-size images ``ratio * a + (1 - ratio) * b``; keep both sets of boxes."""
    if a[0].shape != b[0].shape:
        raise ValueError(f"mixup needs images of one shape, got {a[0].shape} and {b[0].shape}")
    image = cv2.addWeighted(a[0], ratio, b[0], 1 - ratio, 0.0)
    return image, np.concatenate([a[1], b[1]]), np.concatenate([a[2], b[2]])


# ---------------------------------------------------------------------------- the pipeline


class Augmenter:
    """The training transform: ``augmenter(index, load, n, rng)`` -> (S x S image, boxes, classes).

    ``load(i)`` returns the Sample of dataset index ``i`` (the loader passes one that replaces
    unreadable images); ``n`` is the dataset length, for drawing mosaic partners.
    """

    def __init__(self, imgsz: int, hyp: AugmentConfig | None = None) -> None:
        self.imgsz = imgsz
        self.hyp = hyp or AugmentConfig()
        self.mosaic_enabled = self.hyp.mosaic > 0

    def close_mosaic(self) -> None:
        """Switch mosaic and mixup off (the last ``hyp.close_mosaic`` epochs)."""
        self.mosaic_enabled = False

    def _resized(self, sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        image, boxes = resize_long_side(sample.image, sample.boxes, self.imgsz)
        return image, boxes, sample.classes

    def _mosaic(
        self, index: int, load: Callable[[int], Sample], n: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        indices = [index, *rng.integers(0, n, 3).tolist()]
        tiles = [self._resized(load(i)) for i in indices]
        canvas, boxes, classes = mosaic4(tiles, self.imgsz, rng)
        return random_affine(canvas, boxes, classes, rng, self.imgsz, self.hyp)

    def __call__(
        self, index: int, load: Callable[[int], Sample], n: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        hyp, size = self.hyp, self.imgsz
        if self.mosaic_enabled and rng.random() < hyp.mosaic:
            image, boxes, classes = self._mosaic(index, load, n, rng)
            if hyp.mixup and rng.random() < hyp.mixup:
                other = self._mosaic(int(rng.integers(n)), load, n, rng)
                ratio = float(rng.beta(hyp.mixup_beta, hyp.mixup_beta))
                image, boxes, classes = mixup((image, boxes, classes), other, ratio)
        else:
            image, boxes, classes = self._resized(load(index))
            image, boxes, _ = letterbox_sample(image, boxes, size)
            image, boxes, classes = random_affine(image, boxes, classes, rng, size, hyp)
        image = hsv_jitter(image, rng, hyp.hsv_h, hyp.hsv_s, hyp.hsv_v)
        if rng.random() < hyp.fliplr:
            image, boxes = flip_lr(image, boxes)
        if rng.random() < hyp.flipud:
            image, boxes = flip_ud(image, boxes)
        return image, boxes.astype(np.float32), classes.astype(np.int64)
