"""The on-device ``Detector``: an artifact in, detections in original-image pixels out.

``Detector(path)`` reads the bundle's metadata (``edge_yolo.json``, or the copy embedded in a
lone model file), picks the backend it names, and runs the shared numpy pre/post-processing
of :mod:`edge_yolo.runtime.processing` around it, so every backend gives the same answer for
the same raw outputs. Nothing here imports torch: the torch backend is only loaded for ``.pt``
checkpoints.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import cv2
import numpy as np

from ..errors import option
from . import processing
from .backends import SUFFIXES, Backend, BackendError, get_backend
from .bundle import META_FILE, BundleError, BundleMeta, inside
from .bundle import check_files as check_files_against
from .processing import ImageError

ImageInput = np.ndarray | str | os.PathLike
T = TypeVar("T")


class Detection(NamedTuple):
    """One detection: box ``(x1, y1, x2, y2)`` in original-image pixels, score, class."""

    xyxy: tuple[float, float, float, float]
    score: float
    class_id: int
    name: str


@dataclass
class Detections:
    """The detections of one image, best score first, in the image's own pixels."""

    xyxy: np.ndarray  # float32 (N, 4)
    scores: np.ndarray  # float32 (N,)
    class_ids: np.ndarray  # int64 (N,)
    class_names: list[str]  # the model's class-name table (index = class id)
    image_shape: tuple[int, int]  # (h, w) of the original image
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds per stage

    @property
    def labels(self) -> list[str]:
        """Class name of each detection, in order (``class_names`` is the model's table)."""
        return [self.class_names[int(c)] for c in self.class_ids]

    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self) -> Iterator[Detection]:
        for box, score, cid in zip(self.xyxy, self.scores, self.class_ids):
            x1, y1, x2, y2 = (float(v) for v in box)
            yield Detection((x1, y1, x2, y2), float(score), int(cid), self.class_names[int(cid)])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {
            "image_shape": list(self.image_shape),
            "detections": [
                {
                    "xyxy": [round(v, 2) for v in d.xyxy],
                    "score": round(d.score, 4),
                    "class_id": d.class_id,
                    "name": d.name,
                }
                for d in self
            ],
            "timings_ms": {k: round(v, 3) for k, v in self.timings.items()},
        }

    def draw(self, image: np.ndarray, *, thickness: int | None = None) -> np.ndarray:
        """A copy of ``image`` (BGR) with the boxes and labels drawn on it."""
        return draw_detections(image, self, thickness=thickness)

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for n in self.labels:
            counts[n] = counts.get(n, 0) + 1
        summary = ", ".join(f"{c} {n}" for n, c in counts.items()) or "nothing"
        return f"Detections({summary}; image {self.image_shape[1]}x{self.image_shape[0]})"


def _color(class_id: int) -> tuple[int, int, int]:
    # Golden-angle hue steps give neighbouring class ids clearly different colours.
    hue = int(class_id * 137.508) % 180
    bgr = cv2.cvtColor(np.uint8([[[hue, 200, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def draw_detections(
    image: np.ndarray, detections: Detections, *, thickness: int | None = None
) -> np.ndarray:
    """A copy of ``image`` (BGR uint8) with labelled boxes; line width follows image size."""
    out = processing.to_bgr(image).copy()
    t = thickness or max(1, round(sum(out.shape[:2]) / 600))
    font_scale = t / 3
    for d in detections:
        color = _color(d.class_id)
        x1, y1, x2, y2 = (round(v) for v in d.xyxy)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, t, cv2.LINE_AA)
        label = f"{d.name} {d.score:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, max(t - 1, 1))
        top = y1 - th - base if y1 - th - base >= 0 else y1  # keep the label inside the image
        cv2.rectangle(out, (x1, top), (x1 + tw, top + th + base), color, -1)
        cv2.putText(
            out,
            label,
            (x1, top + th),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            (0, 0, 0),
            max(t - 1, 1),
            cv2.LINE_AA,
        )
    return out


def resolve(
    path: str | os.PathLike, *, check_files: bool = True
) -> tuple[Path, BundleMeta, str]:
    """Find the model file and metadata of an artifact: ``(model_file, meta, backend_name)``.

    ``path`` is a bundle directory, its ``edge_yolo.json``, or a lone model file carrying
    embedded metadata (``.onnx``, ``.xml``, ``.tflite``, ``.engine``/``.plan``, ``.pt``).
    A bundle's files are checked against the SHA-256 sums its metadata recorded at export
    (``check_files=False`` skips that, for read-only storage verified another way), and every
    path it names must stay inside it.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such bundle directory or model file")
    if p.is_dir() or p.name == META_FILE:
        bundle = p if p.is_dir() else p.parent
        if not (bundle / META_FILE).is_file():
            raise BundleError(
                f"{bundle}: not an edge-yolo bundle (no {META_FILE} in the directory); pass a "
                "bundle directory written by `edge-yolo export` or a model file"
            )
        meta = BundleMeta.read(bundle)
        return _bundle_file(bundle, meta, check_files), meta, meta.backend
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        known = ", ".join(sorted(SUFFIXES))
        raise BundleError(
            f"{p}: unknown model format {suffix or '(no suffix)'!r}; expected a bundle "
            f"directory or one of {known}"
        )
    # A file inside a bundle directory uses the bundle's metadata file when it describes it.
    sidecar = p.parent / META_FILE
    if sidecar.is_file():
        meta = BundleMeta.read(sidecar)
        if meta.model_file == p.name:
            return _bundle_file(p.parent, meta, check_files), meta, meta.backend
    file_backend = get_backend(SUFFIXES[suffix])
    if not file_backend.available():
        raise BackendError(f"{p}: cannot read this file: {file_backend.missing_message()}")
    meta = file_backend.read_metadata(p)
    # The metadata, not the suffix, names the backend: a Jetson Q/DQ ONNX file is for TensorRT.
    return p, meta, meta.backend


def _bundle_file(bundle: Path, meta: BundleMeta, check_files: bool) -> Path:
    """The bundle's model file, after checking its paths (and, unless told not to, its files)."""
    source = str(bundle / META_FILE)
    for key, name in meta.paths().items():
        inside(bundle, name, source, key)
    model_file = bundle / meta.model_file
    if not model_file.is_file():
        raise BundleError(f"{source}: names model file {meta.model_file!r}, which is missing")
    if check_files:
        check_files_against(bundle, meta, source)
    return model_file


class Detector:
    """Run an exported edge-yolo artifact on images.

    >>> det = Detector("runs/export/gelan-t-rpi-int8")  # doctest: +SKIP
    >>> for d in det("street.jpg"): print(d.name, d.score, d.xyxy)  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike,
        device: str | None = None,
        threads: int | None = None,
        conf: float = 0.25,
        iou: float = 0.45,
        max_det: int = 300,
        backend: str | None = None,
        check_files: bool = True,
    ) -> None:
        model_file, meta, name = resolve(path, check_files=check_files)
        name = backend or name
        cls = get_backend(name)
        if not cls.available():
            hint = ""
            if not backend and name == "tensorrt":  # a Jetson bundle off the Jetson
                hint = (f"; its Q/DQ ONNX also runs on onnxruntime (pip install onnxruntime): "
                        f"{option('backend', 'onnxruntime')}")
            raise BackendError(f"{path}: {cls.missing_message()}{hint}")
        self._setup(cls(model_file, meta, threads=threads, device=device), conf, iou, max_det)
        self.path = Path(path)

    @classmethod
    def from_backend(
        cls, backend: Backend, conf: float = 0.25, iou: float = 0.45, max_det: int = 300
    ) -> Detector:
        """A detector around an already built backend (e.g. a torch model in memory)."""
        self = cls.__new__(cls)
        self._setup(backend, conf, iou, max_det)
        self.path = backend.model_path
        return self

    @classmethod
    def from_model(
        cls,
        model: Any,
        *,
        conf: float = 0.25,
        iou: float = 0.45,
        max_det: int = 300,
        **backend_options: Any,
    ) -> Detector:
        """A detector on a torch model object (the parity reference for exported artifacts);
        ``backend_options`` (``imgsz``, ``names``, ``threads``, ``device``) go to
        ``TorchBackend.from_model``."""
        from .backends.torch import TorchBackend

        backend = TorchBackend.from_model(model, **backend_options)
        return cls.from_backend(backend, conf, iou, max_det)

    def _setup(self, backend: Backend, conf: float, iou: float, max_det: int) -> None:
        if not 0.0 <= conf < 1.0:
            raise ValueError(f"conf must be in [0, 1), got {conf}")
        if not 0.0 < iou <= 1.0:
            raise ValueError(f"iou must be in (0, 1], got {iou}")
        if max_det < 1:
            raise ValueError(f"max_det must be >= 1, got {max_det}")
        self.backend = backend
        self.meta = backend.meta
        self.conf, self.iou, self.max_det = conf, iou, max_det
        if backend.caveat:
            logging.getLogger(__name__).warning("%s: %s", backend.model_path, backend.caveat)

    @property
    def names(self) -> list[str]:
        """The model's class-name table (index = class id); a result's ``labels`` are per box."""
        return list(self.meta.names)

    @property
    def imgsz(self) -> tuple[int, int]:
        """Network input ``(height, width)``."""
        h, w = self.meta.imgsz
        return int(h), int(w)

    def __repr__(self) -> str:
        m = self.meta
        compute = getattr(self.backend, "compute_precision", None)
        on = f"{self.backend.name} ({compute} compute)" if compute else self.backend.name
        return (
            f"Detector({m.model} {m.target}/{m.precision} on {on}, "
            f"{m.imgsz[0]}x{m.imgsz[1]}, {m.num_classes} classes, threads={self.backend.threads})"
        )

    def __call__(self, image: ImageInput) -> Detections:
        """Detect objects in one image (BGR uint8 array or a path to an image file)."""
        return self.batch([image])[0]

    def batch(self, images: Sequence[ImageInput]) -> list[Detections]:
        """Detect objects in several images, one inference call per ``backend.max_batch``."""
        if isinstance(images, (np.ndarray, str, os.PathLike)):
            raise ImageError("batch() takes a sequence of images; call the detector for one image")
        images = list(images)
        step = max(1, int(self.backend.max_batch))
        results: list[Detections] = []
        for start in range(0, len(images), step):
            results.extend(self._run_chunk(images[start : start + step], start))
        return results

    def warmup(self, runs: int = 1) -> None:
        """Run blank frames so first-call allocations and graph compilation are not timed."""
        blank = np.full((*self.imgsz, 3), processing.PAD_VALUE, np.uint8)
        for _ in range(runs):
            self(blank)

    def _load(self, image: ImageInput, index: int) -> np.ndarray:
        if isinstance(image, (str, os.PathLike)):
            return processing.read_image(os.fspath(image))
        try:
            return processing.to_bgr(image)
        except ImageError as e:
            raise ImageError(f"image {index}: {e}") from None

    def stream(
        self,
        items: Iterable[T],
        *,
        image: Callable[[T], ImageInput] | None = None,
        depth: int | None = None,
    ) -> Iterator[tuple[T, Detections]]:
        """Detect on each of ``items`` in order, with up to ``depth`` images in flight.

        Where the runtime runs requests asynchronously (:attr:`Backend.in_flight`; OpenVINO on
        two streams, TFLite on two interpreters, each with half the threads), the next image is
        pre-processed and submitted while earlier ones are still inferring, and the caller's
        work on a result (drawing, writing) overlaps the next inference. Results are exactly
        what :meth:`__call__` gives, yielded in order as ``(item, detections)``; ``image``
        picks the image out of an item (default: the item).
        Other backends run one image at a time, like calling the detector in a loop.
        """
        depth = max(1, depth or self.backend.in_flight)
        pending: collections.deque[tuple[T, _Prepared, Any]] = collections.deque()
        try:
            for index, item in enumerate(items):
                prepared = self._prepare([item if image is None else image(item)], index)
                pending.append((item, prepared, self.backend.submit(prepared.blob)))
                if len(pending) >= depth:
                    item, prepared, handle = pending.popleft()
                    yield item, self._finish(prepared, self.backend.collect(handle))[0]
            while pending:
                item, prepared, handle = pending.popleft()
                yield item, self._finish(prepared, self.backend.collect(handle))[0]
        finally:  # the caller stopped early: let the requests still running finish
            for _, _, handle in pending:
                with contextlib.suppress(Exception):
                    self.backend.collect(handle)

    def _run_chunk(self, images: list[ImageInput], offset: int) -> list[Detections]:
        prepared = self._prepare(images, offset)
        return self._finish(prepared, self.backend.infer(prepared.blob))

    def _prepare(self, images: list[ImageInput], offset: int) -> _Prepared:
        meta = self.meta
        norm = meta.normalization
        pad = int(norm.get("pad_value", processing.PAD_VALUE))
        t0 = time.perf_counter()
        # The runtime normalizes the uint8 images itself: each one is letterboxed straight
        # into the batch and pre-processing ends there. Otherwise the float blob is made from
        # the letterboxed images.
        batch = np.empty((len(images), *self.imgsz, 3), np.uint8)
        infos = []
        for i, image in enumerate(images):
            try:
                infos.append(processing.letterbox_into(
                    self._load(image, offset + i), batch[i], color=pad, strict=True))
            except ImageError as e:
                raise ImageError(f"image {offset + i}: {e}") from None
        if self.backend.takes_uint8:
            blob = batch
        else:
            blob = processing.to_blob(
                list(batch),
                layout=meta.layout,
                color=meta.color,
                scale=float(norm.get("scale", 1 / 255.0)),
                mean=norm.get("mean", (0.0, 0.0, 0.0)),
            )
        return _Prepared(blob, infos, t0, time.perf_counter())

    def _finish(
        self, prepared: _Prepared, outputs: tuple[np.ndarray, np.ndarray]
    ) -> list[Detections]:
        box_dist, cls_logits = outputs
        t2 = time.perf_counter()
        infos, n = prepared.infos, len(prepared.infos)
        t0, t1 = prepared.started, prepared.submitted
        if box_dist.shape[0] != n or cls_logits.shape[0] != n:
            raise BackendError(
                f"{self.backend.model_path}: {self.backend.name} returned a batch of "
                f"{box_dist.shape[0]} for {n} images"
            )
        meta = self.meta
        out = []
        for i, info in enumerate(infos):
            ts = time.perf_counter()
            xyxy, scores, class_ids = processing.postprocess(
                box_dist[i],
                cls_logits[i],
                info,
                strides=tuple(meta.strides),
                reg_max=meta.reg_max,
                conf=self.conf,
                iou=self.iou,
                max_det=self.max_det,
            )
            timings = {
                "pre": (t1 - t0) * 1e3 / n,
                # a batch's inference time, shared evenly; in stream(): submit to result
                "infer": (t2 - t1) * 1e3 / n,
                "post": (time.perf_counter() - ts) * 1e3,
            }
            out.append(Detections(xyxy, scores, class_ids, self.names, info.orig_shape, timings))
        return out


class _Prepared(NamedTuple):
    """Images letterboxed into the backend's input, and when that started and ended."""

    blob: np.ndarray
    infos: list[Any]
    started: float
    submitted: float
