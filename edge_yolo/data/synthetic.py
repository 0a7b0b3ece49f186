"""Built-in synthetic dataset: procedural shapes whose class is their outline.

Five classes (circle, square, triangle, star, cross), 1-6 objects per image, each 10-40 % of
the image side, random rotation and mild stretch, random colours kept apart from the
background they sit on, partial occlusion (at most :attr:`SyntheticConfig.max_occlusion` of an
object hidden by later ones), and textured, striped or gradient backgrounds with sensor-like
noise. Boxes are tight to the visible pixels of each shape, so they are exact whatever the
occlusion. No files: image ``i`` of a split is drawn from its own random stream
``(seed, split, i)``, so it is the same whatever the access order or number of loader
workers, and the splits never share an image stream.

``load_dataset("synthetic")`` gives 1000 train / 200 val images at 320 px;
``"synthetic:N"`` gives N train images and N // 5 (at least 1) val/test images. Keywords
set the size, seed and any :class:`SyntheticConfig` field:
``load_dataset("synthetic:500", "val", imgsz=256, seed=1, max_occlusion=0.2)``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..errors import refuse_unknown_keys
from .dataset import DetectionDataset, Sample
from .report import DataReport, DatasetError

CLASSES = ("circle", "square", "triangle", "star", "cross")
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZES = {"train": 1000, "val": 200, "test": 200}


@dataclass(frozen=True)
class SyntheticConfig:
    """How the synthetic images are drawn."""

    imgsz: int = 320
    min_objects: int = 1
    max_objects: int = 6
    min_size: float = 0.10  # object extent as a fraction of the image side
    max_size: float = 0.40
    max_occlusion: float = 0.35  # most of an object's area later objects may hide
    min_contrast: float = 90.0  # BGR distance between an object and the background under it
    noise: float = 10.0  # largest per-pixel Gaussian noise sigma

    def __post_init__(self) -> None:
        if self.imgsz < 32:
            raise ValueError(f"imgsz must be >= 32, got {self.imgsz}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError("need 1 <= min_objects <= max_objects")
        if not 0 < self.min_size <= self.max_size <= 0.9:
            raise ValueError("need 0 < min_size <= max_size <= 0.9")
        if not 0 <= self.max_occlusion < 1:
            raise ValueError("max_occlusion must be in [0, 1)")


def parse_synthetic_spec(spec: str, split: str) -> dict[str, int]:
    """``synthetic`` -> {}; ``synthetic:N`` -> N images for train, N // 5 for val/test."""
    _, _, count = spec.partition(":")
    if not count:
        return {}
    try:
        n = int(count)
    except ValueError:
        raise DatasetError(f"{spec!r}: expected synthetic:N with an integer N") from None
    if n < 1:
        raise DatasetError(f"{spec!r}: N must be >= 1")
    return {"num_images": n if split == "train" else max(1, n // 5)}


class SyntheticDataset(DetectionDataset):
    """Procedural shapes dataset; deterministic per (seed, split, index), nothing on disk."""

    def __init__(
        self,
        split: str = "train",
        num_images: int | None = None,
        *,
        imgsz: int = 320,
        seed: int = 0,
        config: SyntheticConfig | None = None,
        **overrides: Any,
    ) -> None:
        """``overrides`` replace :class:`SyntheticConfig` fields, e.g. ``max_occlusion=0.2``."""
        if split not in _SPLIT_IDS:
            message = f"synthetic: unknown split {split!r}; expected one of {list(_SPLIT_IDS)}"
            raise DatasetError(message)
        self.split = split
        self.seed = seed
        fields = {f.name for f in dataclasses.fields(SyntheticConfig)}
        refuse_unknown_keys(overrides, fields, "synthetic", DatasetError)
        try:
            self.config = dataclasses.replace(config or SyntheticConfig(imgsz=imgsz), **overrides)
        except ValueError as e:
            raise DatasetError(f"synthetic: {e}") from e
        self.num_images = DEFAULT_SIZES[split] if num_images is None else int(num_images)
        if self.num_images < 1:
            raise DatasetError(f"synthetic: num_images must be >= 1, got {self.num_images}")
        self.names = list(CLASSES)
        self.source = f"synthetic:{self.num_images} [{split}, seed {seed}, {self.config.imgsz}px]"
        self.report = DataReport(source=self.source)

    def __len__(self) -> int:
        return self.num_images

    def image_path(self, index: int) -> str:
        return f"synthetic/{self.split}/{self._index(index):06d}"

    def num_boxes(self) -> int:
        return self.num_images * self.config.min_objects  # at least: every image has objects

    def load(self, index: int) -> Sample:
        index = self._index(index)
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], index])
        image, boxes, classes = render(rng, self.config)
        return Sample(image, boxes, classes, self.image_path(index))


# ---------------------------------------------------------------------------- drawing


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    base = rng.uniform(30, 225, 3).astype(np.float32)
    kind = rng.integers(4)
    if kind == 0:  # smooth gradient, drawn small and upsampled (it is linear)
        gx, gy = rng.uniform(-90, 90, (2, 3)).astype(np.float32)
        r = np.linspace(-0.5, 0.5, 16, dtype=np.float32)
        small = base + r[None, :, None] * gx + r[:, None, None] * gy
        img = cv2.resize(small, (s, s), interpolation=cv2.INTER_LINEAR)
    elif kind == 1:  # low-frequency colour texture (blotches)
        cells = int(rng.integers(3, 12))
        coarse = rng.uniform(-45, 45, (cells, cells, 3)).astype(np.float32)
        img = base + cv2.resize(coarse, (s, s), interpolation=cv2.INTER_CUBIC)
    elif kind == 2:  # stripes at a random angle
        period = rng.uniform(6, 30)
        angle = rng.uniform(0, math.pi)
        k = np.float32(s * 2 * math.pi / period)
        ramp = np.linspace(-0.5, 0.5, s, dtype=np.float32)
        phase = ramp[None, :] * (k * math.cos(angle)) + ramp[:, None] * (k * math.sin(angle))
        amplitude = rng.uniform(10, 35, 3).astype(np.float32)
        img = cv2.merge([np.sin(phase) * a + b for a, b in zip(amplitude, base)])
    else:  # flat colour with fine grain
        img = base + _noise(rng, s, rng.uniform(5, 20))
    return img


_NOISE_BANK: np.ndarray | None = None


def _noise(rng: np.random.Generator, s: int, sigma: float) -> np.ndarray:
    """Gaussian noise (s, s, 3): a random window of a fixed bank, 20x cheaper than drawing it."""
    global _NOISE_BANK
    if _NOISE_BANK is None or _NOISE_BANK.shape[0] < 2 * s:
        bank_rng = np.random.default_rng(12345)
        _NOISE_BANK = bank_rng.standard_normal((2 * max(s, 320),) * 2 + (3,), dtype=np.float32)
    y, x = rng.integers(0, _NOISE_BANK.shape[0] - s, 2)
    return _NOISE_BANK[y : y + s, x : x + s] * np.float32(sigma)


def _outline(cls: int, r: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-free polygon of a shape of radius ``r`` around (0, 0), before rotation."""
    if cls == 0:  # circle: many-sided polygon, so every shape goes through one code path
        t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1) * r
    elif cls == 1:  # square
        t = np.arange(4) * (math.pi / 2) + math.pi / 4
        pts = np.stack([np.cos(t), np.sin(t)], 1) * r
    elif cls == 2:  # equilateral triangle
        t = np.arange(3) * (2 * math.pi / 3) - math.pi / 2
        pts = np.stack([np.cos(t), np.sin(t)], 1) * r
    elif cls == 3:  # five-pointed star
        t = np.arange(10) * (math.pi / 5) - math.pi / 2
        radius = np.where(np.arange(10) % 2 == 0, r, r * rng.uniform(0.38, 0.5))
        pts = np.stack([np.cos(t), np.sin(t)], 1) * radius[:, None]
    else:  # cross (plus sign)
        a, b = r, r * rng.uniform(0.28, 0.38)
        pts = np.array(
            [
                [b, a],
                [b, b],
                [a, b],
                [a, -b],
                [b, -b],
                [b, -a],
                [-b, -a],
                [-b, -b],
                [-a, -b],
                [-a, b],
                [-b, b],
                [-b, a],
            ],
            float,
        )
    return pts


def _shape_mask(
    cls: int, s: int, rng: np.random.Generator, cfg: SyntheticConfig
) -> tuple[np.ndarray, int, int]:
    """A filled shape as a boolean mask of its bounding square, and that square's (x0, y0)."""
    extent = rng.uniform(cfg.min_size, cfg.max_size) * s
    pts = _outline(cls, extent / 2, rng)
    pts = pts * np.array([1.0, rng.uniform(0.8, 1.25)])  # mild stretch keeps the class readable
    angle = rng.uniform(0, 2 * math.pi)
    c, si = math.cos(angle), math.sin(angle)
    pts = pts @ np.array([[c, si], [-si, c]])
    lo, hi = pts.min(0), pts.max(0)
    # Whole shape inside the image: cut-off shapes come from mosaic/affine augmentation.
    centre = rng.uniform(-lo, s - hi)
    x0, y0 = (int(v) for v in np.floor(lo + centre))
    x1, y1 = (min(int(v) + 1, s) for v in np.ceil(hi + centre))
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    local = np.round((pts + centre - (x0, y0)) * 16).astype(np.int32)
    cv2.fillPoly(mask, [local], 1, cv2.LINE_8, shift=4)
    return mask.astype(bool), x0, y0


def _colour(rng: np.random.Generator, under: np.ndarray, min_contrast: float) -> np.ndarray:
    best, best_d = None, -1.0
    for _ in range(12):
        hue, sat, val = rng.integers(180), rng.integers(60, 256), rng.integers(40, 256)
        hsv = np.array([[[hue, sat, val]]], np.uint8)
        colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
        d = float(np.linalg.norm(colour - under))
        if d >= min_contrast:
            return colour
        if d > best_d:
            best, best_d = colour, d
    # Fall back to the most distant draw, pushed away from the background.
    assert best is not None
    return np.where(under > 127, 0.25 * best, 255 - 0.25 * (255 - best))


def render(
    rng: np.random.Generator, cfg: SyntheticConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image: (BGR uint8 (S, S, 3), float32 xyxy boxes, int64 classes)."""
    s = cfg.imgsz
    image = _background(rng, s)
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    # Index of the topmost object at each pixel (-1: background); work stays in object crops.
    owner = np.full((s, s), -1, np.int16)
    visible: list[int] = []  # visible pixels of each placed object
    areas: list[int] = []
    regions: list[tuple[slice, slice]] = []
    classes: list[int] = []
    for _ in range(n):
        for _attempt in range(20):
            cls = int(rng.integers(len(CLASSES)))
            mask, x0, y0 = _shape_mask(cls, s, rng, cfg)
            if not mask.any():  # a sliver thinner than a pixel at a tiny imgsz
                continue
            region = (slice(y0, y0 + mask.shape[0]), slice(x0, x0 + mask.shape[1]))
            hidden = np.bincount(owner[region][mask] + 1, minlength=len(visible) + 1)[1:]
            # Reject a placement that would hide too much of an earlier object.
            if all(v - h >= (1 - cfg.max_occlusion) * a for v, h, a in zip(visible, hidden, areas)):
                break
        else:
            continue
        visible = [v - h for v, h in zip(visible, hidden)]
        crop = image[region]
        colour = _colour(rng, crop[mask].mean(0), cfg.min_contrast)
        if rng.random() < 0.3:  # shaded fill: a light gradient across the object
            t = np.linspace(-0.5, 0.5, mask.shape[1], dtype=np.float32)[None, :, None]
            shaded = colour + t * np.float32(rng.uniform(20, 50))
            crop[mask] = np.broadcast_to(shaded, (*mask.shape, 3))[mask]
        else:
            crop[mask] = colour
        owner[region][mask] = len(visible)
        visible.append(int(mask.sum()))
        areas.append(visible[-1])
        regions.append(region)
        classes.append(cls)
    sigma = rng.uniform(0, cfg.noise)
    if sigma > 1:
        image += _noise(rng, s, sigma)
    out = np.clip(image, 0, 255, out=image).astype(np.uint8)
    boxes = np.zeros((len(classes), 4), np.float32)
    for k, (ys, xs) in enumerate(regions):
        # The visible pixels lie inside the object's own crop: search only there.
        m = owner[ys, xs] == k
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        # Pixel edges, so x2 - x1 is the width in pixels.
        boxes[k] = (
            xs.start + cols[0],
            ys.start + rows[0],
            xs.start + cols[-1] + 1,
            ys.start + rows[-1] + 1,
        )
    return out, boxes, np.array(classes, np.int64)


def sample_scene(imgsz: int, seed: int = 0) -> np.ndarray:
    """A deterministic 4:3 BGR scene (smooth background + filled shapes): export references,
    example inputs and benchmark frames when no real image is at hand."""
    rng = np.random.default_rng(seed)
    h, w = imgsz * 3 // 4, imgsz
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([(xx / w) * 200, (yy / h) * 200, ((xx + yy) / (w + h)) * 255], -1)
    image = np.ascontiguousarray(base.astype(np.uint8))
    for _ in range(6):
        x1, y1 = int(rng.integers(0, w * 3 // 4)), int(rng.integers(0, h * 3 // 4))
        x2, y2 = x1 + int(rng.integers(w // 10, w // 3)), y1 + int(rng.integers(h // 10, h // 3))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            cv2.rectangle(image, (x1, y1), (x2, y2), color, -1)
        else:
            cv2.circle(image, ((x1 + x2) // 2, (y1 + y2) // 2), (x2 - x1) // 2, color, -1)
    return image
