"""Pre- and post-processing in numpy, shared by every backend (and by evaluation).

Pipeline: image (BGR uint8) -> :func:`letterbox` -> RGB float blob -> model -> raw
``box_dist (4*reg_max, A)`` + ``cls_logits (nc, A)`` -> :func:`postprocess`: prune anchors by
their best class logit (sigmoid is monotonic, so no sigmoid or DFL work is spent on
background), DFL expectation, anchor decode, class-aware NMS (OpenCV), then scale back to the
original image. Mirrors :mod:`edge_yolo.models.decode` (torch); tests hold them together.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import EdgeYoloError

PAD_VALUE = 114
#: files read as images, and as videos (frame by frame), wherever a path is taken
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg")


class ImageError(EdgeYoloError, ValueError):
    """An input that is not a usable image; the message says what was wrong."""


@dataclass(frozen=True)
class LetterboxInfo:
    """How an image was fitted into the network input: ``net_xy = orig_xy * ratio + pad``."""

    ratio: float
    pad: tuple[float, float]  # (left, top) in network-input pixels
    orig_shape: tuple[int, int]  # (h, w) of the original image
    new_shape: tuple[int, int]  # (h, w) of the network input


def _as_hw(shape: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(shape, (int, np.integer)):
        return int(shape), int(shape)
    h, w = shape
    return int(h), int(w)


def letterbox(
    image: np.ndarray,
    new_shape: int | tuple[int, int] = 640,
    color: int = PAD_VALUE,
    scaleup: bool = True,
    strict: bool = False,
) -> tuple[np.ndarray, LetterboxInfo]:
    """Resize keeping the aspect ratio and pad to ``new_shape`` (image centred).

    Every shape works: a side that would round to zero pixels is kept at one. ``strict``
    refuses instead (:class:`ImageError`) an image so thin that its short side would shrink
    below one pixel: nothing of it would be left to detect (what the ``Detector`` does).
    """
    nh, nw = _as_hw(new_shape)
    out = np.empty((nh, nw, *image.shape[2:]), image.dtype)
    return out, letterbox_into(image, out, color=color, scaleup=scaleup, strict=strict)


def letterbox_into(
    image: np.ndarray,
    out: np.ndarray,
    color: int = PAD_VALUE,
    scaleup: bool = True,
    strict: bool = False,
) -> LetterboxInfo:
    """:func:`letterbox` written into ``out`` (``(H, W[, C])``, e.g. one image of a batch):
    the resize lands straight in its place and only the borders are filled, so a batch is
    built without an intermediate image per frame and a copy of each into the batch."""
    h, w = image.shape[:2]
    nh, nw = out.shape[:2]
    r = min(nh / h, nw / w)
    if not scaleup:
        r = min(r, 1.0)
    if strict and min(h, w) * r < 1:
        raise ImageError(
            f"image {w}x{h} is too thin for a {nw}x{nh} input: its short side would shrink "
            "below one pixel"
        )
    rw, rh = max(1, round(w * r)), max(1, round(h * r))
    dw, dh = (nw - rw) / 2, (nh - rh) / 2
    top, left = round(dh - 0.1), round(dw - 0.1)
    inner = out[top : top + rh, left : left + rw]
    if (rw, rh) == (w, h):
        inner[...] = image
    elif r < 1 / 3:
        # Bilinear is ~5x cheaper than INTER_AREA at non-integer scales and aliases visibly
        # only for strong reductions, where area averaging is worth its cost.
        _area_reduce(image, rw, rh, inner)
    else:
        _resize_into(image, inner, cv2.INTER_LINEAR)
    if rh < nh:  # the borders: the bands above and below, then left and right of the image
        out[:top] = color
        out[top + rh :] = color
    if rw < nw:
        out[top : top + rh, :left] = color
        out[top : top + rh, left + rw :] = color
    return LetterboxInfo(r, (float(left), float(top)), (h, w), (nh, nw))


def _area_reduce(image: np.ndarray, rw: int, rh: int, dst: np.ndarray) -> None:
    """INTER_AREA to ``(rw, rh)`` into ``dst``, by exact halvings while the image is 2x too
    big or more.

    OpenCV's area resize has a fast path for an exact factor of 2 only: a 1280x720 frame to
    320x180 took 0.84 ms in one step and 0.30 in two halvings, within 0.25 grey levels of it
    on average (rounding between the steps); a 1920x1080 frame took 1.5 ms in one step. The
    geometry is the same: each halving is exact, and the last step lands on ``(rw, rh)``.
    """
    h, w = image.shape[:2]
    while h % 2 == 0 and w % 2 == 0 and h >= 2 * rh and w >= 2 * rw:
        h, w = h // 2, w // 2
        if (w, h) == (rw, rh):
            break
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    _resize_into(image, dst, cv2.INTER_AREA)


def _resize_into(image: np.ndarray, dst: np.ndarray, interpolation: int) -> None:
    """``cv2.resize`` to ``dst``'s size, written in place (OpenCV takes a strided view as its
    destination; a layout it cannot write into, e.g. one channel kept as an axis, is copied)."""
    out = cv2.resize(image, (dst.shape[1], dst.shape[0]), dst=dst, interpolation=interpolation)
    if out is not dst:
        dst[...] = out.reshape(dst.shape)


def to_bgr(image: object) -> np.ndarray:
    """Check an input image and bring it to 3-channel BGR uint8 (grayscale and BGRA converted)."""
    if not isinstance(image, np.ndarray):
        raise ImageError(
            f"expected an image as a numpy array or a path, got {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise ImageError(
            f"expected a uint8 image (OpenCV BGR), got dtype {image.dtype}; "
            "convert with (img * 255).clip(0, 255).astype(np.uint8) if it is float in [0, 1]"
        )
    if image.size == 0 or image.ndim < 2 or min(image.shape[:2]) == 0:
        raise ImageError(f"image is empty (shape {image.shape})")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3:
        raise ImageError(
            f"expected 1 (gray), 3 (BGR) or 4 (BGRA) channels, got {image.shape[2]} "
            f"(image shape {image.shape})"
        )
    raise ImageError(f"expected an image of shape (H, W) or (H, W, C), got shape {image.shape}")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as BGR uint8 (grey, alpha and 16-bit converted), with an error
    naming the file when it cannot. The one image decoder: the runtime, datasets and
    calibration all read files through it.

    A JPEG without its end-of-image marker is refused: OpenCV decodes a cut-off JPEG into a
    partly grey image with only a warning, which would train and calibrate on garbage.
    """
    path = os.fspath(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image file") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot read image file ({e.strerror or e})") from None
    if data[:2].tobytes() == b"\xff\xd8" and data.tobytes().rfind(b"\xff\xd9") < 0:
        raise ImageError(f"{path}: truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ImageError(f"{path}: not a readable image (corrupt or unsupported format)")
    if image.dtype == np.uint16:  # 16-bit PNG/TIFF: keep the top byte
        image = (image >> 8).astype(np.uint8)
    return to_bgr(image)


def preprocess(
    image: np.ndarray,
    imgsz: int | tuple[int, int] = 640,
    *,
    layout: str = "NCHW",
    dtype: type | np.dtype = np.float32,
    color: str = "RGB",
    scale: float = 1 / 255.0,
    mean: tuple[float, float, float] | list[float] = (0.0, 0.0, 0.0),
    pad_value: int = PAD_VALUE,
) -> tuple[np.ndarray, LetterboxInfo]:
    """BGR uint8 image -> network blob ``(1, 3, H, W)`` (or NHWC), RGB ``(pixel - mean) * scale``
    (so [0, 1] by default), and the letterbox geometry needed to map detections back."""
    boxed, info = letterbox(to_bgr(image), imgsz, color=pad_value)
    blob = to_blob([boxed], layout=layout, color=color, scale=scale, mean=mean)
    return (blob if np.dtype(dtype) == np.float32 else blob.astype(dtype)), info


def to_blob(
    images: list[np.ndarray],
    *,
    layout: str = "NCHW",
    color: str = "RGB",
    scale: float = 1 / 255.0,
    mean: tuple[float, float, float] | list[float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """Letterboxed BGR uint8 images of one size -> float32 batch ``(B, 3, H, W)`` (or NHWC)."""
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be NCHW or NHWC, got {layout!r}")
    if color not in ("RGB", "BGR"):
        raise ValueError(f"color must be RGB or BGR, got {color!r}")
    swap = color == "RGB"
    if layout == "NCHW":
        # One pass per output plane, straight from the strided uint8 channel into the float
        # plane: 1.0 ms at 640 against 4.0 for cv2.dnn.blobFromImages (several passes), and
        # the same values to the bit ((x - mean) * scale in float32, as OpenCV computes it).
        h, w = images[0].shape[:2]
        blob = np.empty((len(images), 3, h, w), np.float32)
        factor = np.float32(scale)
        for b, image in enumerate(images):
            for c in range(3):
                plane, out = image[:, :, 2 - c if swap else c], blob[b, c]
                if mean[c]:
                    np.subtract(plane, np.float32(mean[c]), out=out, casting="unsafe")
                    out *= factor
                else:
                    np.multiply(plane, factor, out=out, casting="unsafe")
        return blob
    h, w = images[0].shape[:2]
    blob = np.empty((len(images), h, w, 3), np.float32)
    for b, image in enumerate(images):
        # OpenCV's channel swap, then one contiguous pass: 3x faster than numpy reading the
        # reversed channel view
        source = cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if swap else image
        if any(mean):
            np.subtract(source, np.asarray(mean, np.float32), out=blob[b], casting="unsafe")
            blob[b] *= np.float32(scale)
        else:
            np.multiply(source, np.float32(scale), out=blob[b], casting="unsafe")
    return blob


@functools.lru_cache(maxsize=16)
def make_anchors(
    new_shape: tuple[int, int], strides: tuple[int, ...] = (8, 16, 32)
) -> tuple[np.ndarray, np.ndarray]:
    """Anchor points ``(A, 2)`` (cell centres, pixels) and their strides ``(A,)`` for an input
    of ``new_shape``; level order and row-major flattening as in the exported outputs."""
    h, w = new_shape
    points, stride_col = [], []
    for s in strides:
        gh, gw = math.ceil(h / s), math.ceil(w / s)
        xs = (np.arange(gw, dtype=np.float32) + 0.5) * s
        ys = (np.arange(gh, dtype=np.float32) + 0.5) * s
        xx, yy = np.meshgrid(xs, ys)
        points.append(np.stack((xx, yy), -1).reshape(-1, 2))
        stride_col.append(np.full(gh * gw, s, dtype=np.float32))
    pts, st = np.concatenate(points), np.concatenate(stride_col)
    pts.flags.writeable = False
    st.flags.writeable = False
    return pts, st


def dfl_decode(box_dist: np.ndarray, reg_max: int = 16) -> np.ndarray:
    """``(4*reg_max, K)`` logits -> ``(K, 4)`` expected LTRB distances (stride units)."""
    k = box_dist.shape[1]
    logits = box_dist.reshape(4, reg_max, k).astype(np.float32, copy=False)
    logits = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(logits)
    prob /= prob.sum(axis=1, keepdims=True)
    dist = np.einsum("frk,r->kf", prob, np.arange(reg_max, dtype=np.float32))
    return dist


def sigmoid(x: np.ndarray) -> np.ndarray:
    # exp overflows to inf below about -88 in float32, and 1 / (1 + inf) is the right 0:
    # without the errstate every such logit printed a RuntimeWarning at the user
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def decode(
    box_dist: np.ndarray,
    cls_logits: np.ndarray,
    new_shape: tuple[int, int],
    *,
    strides: tuple[int, ...] = (8, 16, 32),
    reg_max: int = 16,
    conf: float = 0.25,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw outputs of one image -> candidate ``boxes (K, 4)`` xyxy (network pixels),
    ``scores (K,)``, ``class_ids (K,)`` for the anchors whose best score exceeds ``conf``."""
    points, stride_col = make_anchors(tuple(new_shape), tuple(strides))
    a = points.shape[0]
    if box_dist.shape != (4 * reg_max, a) or cls_logits.ndim != 2 or cls_logits.shape[1] != a:
        raise ValueError(
            f"raw outputs of shape {box_dist.shape} and {cls_logits.shape} do not fit a "
            f"{new_shape[0]}x{new_shape[1]} input (expected ({4 * reg_max}, {a}) and (nc, {a}))"
        )
    best_logit = cls_logits.max(0)
    conf = min(max(conf, 1e-7), 1 - 1e-7)
    keep = np.flatnonzero(best_logit > math.log(conf / (1 - conf)))  # sigmoid(x) > conf
    if keep.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    best = cls_logits[:, keep].argmax(0).astype(np.int64)  # only for the few kept anchors
    dist = dfl_decode(box_dist[:, keep], reg_max) * stride_col[keep, None]
    p = points[keep]
    boxes = np.concatenate((p - dist[:, :2], p + dist[:, 2:]), 1)
    return boxes, sigmoid(best_logit[keep].astype(np.float32)), best


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou: float = 0.45,
    max_det: int = 300,
) -> np.ndarray:
    """Class-aware NMS: indices of the kept boxes, best score first (ties: lower index first).

    One OpenCV NMS per class: the same boxes survive as in one batched NMS over all classes,
    at a fraction of the cost when there are many candidates (the comparisons grow with the
    square of each class's count, not of the total: 8,000 candidates over 60 classes took
    35 ms batched and 14 ms per class).
    """
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    xywh = np.concatenate((boxes[:, :2], boxes[:, 2:] - boxes[:, :2]), 1).astype(np.float32)
    conf = scores.astype(np.float32)
    order = np.argsort(class_ids, kind="stable")
    sorted_ids = class_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    kept = []
    for idx in np.split(order, starts[1:]):
        if len(idx) > 1:
            picked = cv2.dnn.NMSBoxes(xywh[idx], conf[idx], 0.0, float(iou))
            idx = idx[np.asarray(picked, dtype=np.int64).reshape(-1)]
        kept.append(idx)
    keep = np.concatenate(kept)
    keep = keep[np.lexsort((keep, -conf[keep]))]
    return keep[:max_det]


def scale_boxes(boxes: np.ndarray, info: LetterboxInfo) -> np.ndarray:
    """Network-input xyxy -> original-image xyxy, clipped to the image."""
    out = boxes.astype(np.float32, copy=True)
    h, w = info.orig_shape
    # strided views in place, not fancy-indexed copies: 13 against 23 us for a few boxes
    for column, pad, limit in ((out[:, 0::2], info.pad[0], w), (out[:, 1::2], info.pad[1], h)):
        column -= np.float32(pad)
        column /= np.float32(info.ratio)
        np.clip(column, 0, limit, out=column)
    return out


def postprocess(
    box_dist: np.ndarray,
    cls_logits: np.ndarray,
    info: LetterboxInfo,
    *,
    strides: tuple[int, ...] = (8, 16, 32),
    reg_max: int = 16,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw outputs of one image -> ``xyxy (N, 4)`` float32 in original pixels, ``scores (N,)``,
    ``class_ids (N,)`` int64, best first."""
    boxes, scores, class_ids = decode(
        box_dist, cls_logits, info.new_shape, strides=strides, reg_max=reg_max, conf=conf
    )
    keep = nms(boxes, scores, class_ids, iou, max_det)
    return scale_boxes(boxes[keep], info), scores[keep].astype(np.float32), class_ids[keep]


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer tensor -> float32: ``(q - zero_point) * scale``."""
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: type | np.dtype) -> np.ndarray:
    """float -> integer tensor of ``dtype``: ``round(x / scale) + zero_point``, saturated."""
    info = np.iinfo(dtype)
    q = np.round(x / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)
