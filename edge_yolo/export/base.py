"""The exporter interface and the steps every target shares.

How a target plugs in (``rpi``, ``intel``, ``jetson``, ``onnx`` all do it this way):

1. Add a row to :data:`edge_yolo.export.targets.TARGETS` naming ``"module:Class"``.
2. In that module, subclass :class:`Exporter` and implement ``build(job, staging)``:
   write the model file(s) into the ``staging`` directory and return an :class:`Artifact`
   (model file name, input/output :class:`TensorSpec`s with real shapes, dtypes and quant
   params, layout, what ``quantization`` means, target facts for ``extra``). Use
   ``job.model`` (fused float :class:`~edge_yolo.models.ExportModel`, eval mode),
   ``job.example_input()``, ``job.calibration_images()`` / ``job.calibration_blobs()`` (BGR
   images / letterboxed blobs exactly as the runtime preprocesses them; calling either
   records the calibration provenance) and ``job.target_options`` (your options dataclass,
   declared as the class attribute ``options_type``).
3. Optionally override ``embed_metadata(model_path, meta)`` (put the JSON inside the model
   file under ``META_KEY``) and ``readme_section(meta, job)`` (board-specific run notes).

:func:`run_export` does the rest, identically for every target: capability check before any
work, checkpoint loading (drop PGI branch, fuse), a staging directory beside the
destination, running the artifact on this host through its runtime backend to record
``reference.npz`` and the output agreement with the float model, ``edge_yolo.json``,
``README.md``, and an atomic rename into ``<out>/<model>-<target>-<precision>/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import logging
import os
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..runtime.bundle import BundleMeta, Calibration, TensorSpec, atomic_write_text
from ..runtime.processing import preprocess
from .targets import DeviceProfile, TargetError, TargetSpec, resolve

if TYPE_CHECKING:
    import torch

LOGGER = logging.getLogger(__name__)

INPUT_NAME = "images"
REFERENCE_FILE = "reference.npz"
DEFAULT_CALIB_SIZE = 300


class ExportError(RuntimeError):
    """An export that could not be completed; the message says which step and why."""


@dataclass
class ExportOptions:
    """What to export and how; shared by every target (per-target extras in ``target_options``)."""

    target: str  # a target in TARGETS or a board in devices/
    precision: str | None = None  # None: the board's or the target's default
    imgsz: int | None = None  # square input side; None: board, else checkpoint, else 640
    calib: str | None = None  # dataset spec or image folder; None: the checkpoint's dataset
    calib_size: int | None = None  # None: the board's calib_size, else 300
    dynamic: bool = False  # dynamic batch dimension (static shapes otherwise)
    out: str | os.PathLike = "exports"  # directory the bundle directory is written into
    name: str | None = None  # bundle directory name; None: <model>-<target>-<precision>
    simplify: bool = True  # onnxslim on ONNX graphs
    opset: int = 18  # 17 for TensorRT 8.x (JetPack 5); see export/onnx.py
    threads: int | None = None  # threads for the host-side verification run
    num_references: int = 2  # letterboxed inputs + expected outputs saved in reference.npz
    agreement_images: int = 8  # images on which the artifact is compared with the float model
    target_options: Any = None  # the target exporter's options_type instance

    def __post_init__(self) -> None:
        if self.imgsz is not None and (self.imgsz <= 0 or self.imgsz % 32):
            raise TargetError(f"imgsz must be a positive multiple of 32, got {self.imgsz}")
        if self.calib_size is not None and self.calib_size <= 0:
            raise TargetError(f"calib_size must be positive, got {self.calib_size}")
        if self.opset < 17:
            raise TargetError(f"opset must be >= 17, got {self.opset}")


@dataclass
class Artifact:
    """What a target's ``build`` produced in the staging directory."""

    model_file: str  # relative to the bundle directory
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    quantization: str = "none"  # none | fp16-weights | weights-only | full-integer | qdq
    layout: str = "NCHW"
    extra: dict[str, Any] = field(default_factory=dict)


class ExportJob:
    """The resolved export: options, board profile, float model and calibration data."""

    def __init__(
        self,
        options: ExportOptions,
        spec: TargetSpec,
        precision: str,
        device: DeviceProfile | None,
        weights: Path,
        target_options: Any,
    ) -> None:
        from ..models import ExportModel, load_model

        self.options = options
        self.spec = spec
        self.precision = precision
        self.device = device
        self.weights = weights
        self.target_options = target_options
        model, ckpt = load_model(weights)
        if model.aux is not None:
            model.drop_auxiliary()
        model.fuse().eval()
        self.yolo = model
        self.model = ExportModel(model).eval()
        self.ckpt = ckpt
        self.model_name: str = model.name
        self.names: list[str] = list(ckpt["names"])
        self.imgsz: int = int(
            options.imgsz or (device.imgsz if device else 0) or ckpt.get("imgsz") or 640
        )
        if self.imgsz % 32:
            raise TargetError(f"imgsz must be a multiple of 32, got {self.imgsz}")
        self.checkpoint_sha256 = sha256_file(weights)
        board_calib = device.calib_size if device else DEFAULT_CALIB_SIZE
        self.calib_size = options.calib_size or board_calib
        self.calibration: Calibration | None = None
        self._calib_images: list[np.ndarray] | None = None

    # -- inputs -------------------------------------------------------------------------------

    @property
    def calib_source(self) -> str | None:
        """The calibration source: ``--calib``, else the dataset the checkpoint was trained on."""
        if self.options.calib:
            return str(self.options.calib)
        train_config = self.ckpt.get("train_config")
        for holder in (self.ckpt, train_config if isinstance(train_config, dict) else {}):
            for key in ("data", "dataset"):
                value = holder.get(key)
                if isinstance(value, str) and value:
                    return value
        return None

    def calibration_images(self) -> list[np.ndarray]:
        """Up to ``calib_size`` BGR images from the calibration source (recorded in the bundle)."""
        if self._calib_images is None:
            source = self.calib_source
            if source is None:
                raise ExportError(
                    f"{self.precision} export for {self.spec.name!r} needs calibration images and "
                    f"the checkpoint {self.weights} does not name its dataset: pass --calib DATA "
                    "(a dataset spec such as data.yaml / a COCO json, or an image folder)"
                )
            images = load_calibration_images(source, self.calib_size)
            self._calib_images = images
            self.calibration = Calibration(
                dataset=source, num_images=len(images), sha256=sha256_images(images)
            )
            LOGGER.info("calibration: %d images from %s", len(images), source)
        return self._calib_images

    def calibration_blobs(self, layout: str = "NCHW") -> list[np.ndarray]:
        """The calibration images letterboxed exactly as the runtime does: ``(1, 3, S, S)`` each."""
        return [preprocess(im, self.imgsz, layout=layout)[0] for im in self.calibration_images()]

    def sample_images(self, n: int) -> list[np.ndarray]:
        """Images for references and agreement: calibration images when a source was given or
        already loaded, else deterministic synthetic scenes (4:3, so padding is exercised)."""
        if self._calib_images is not None:
            return self._calib_images[:n]
        if self.options.calib:
            return load_calibration_images(str(self.options.calib), n)
        return [synthetic_image(self.imgsz, seed=i) for i in range(n)]

    def example_input(self, batch: int = 1) -> torch.Tensor:
        import torch

        blob = preprocess(synthetic_image(self.imgsz, seed=0), self.imgsz)[0]
        return torch.from_numpy(np.repeat(blob, batch, 0))

    def float_outputs(self, blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The float PyTorch model's raw outputs for an NCHW blob."""
        import torch

        with torch.inference_mode():
            box, cls = self.model(torch.from_numpy(np.ascontiguousarray(blob)))
        return box.numpy(), cls.numpy()

    # -- tensor specs -------------------------------------------------------------------------

    @property
    def num_anchors(self) -> int:
        return sum((-(-self.imgsz // s)) ** 2 for s in self.yolo.strides)

    def float_io(self, layout: str = "NCHW") -> tuple[list[TensorSpec], list[TensorSpec]]:
        """Input/output specs of a float model in the canonical layout."""
        b = -1 if self.options.dynamic else 1
        s = self.imgsz
        shape = [b, 3, s, s] if layout == "NCHW" else [b, s, s, 3]
        inputs = [TensorSpec(INPUT_NAME, shape, "float32", f"letterboxed RGB in [0, 1], {layout}")]
        a, reg_max = self.num_anchors, self.yolo.reg_max
        outputs = [
            TensorSpec("box_dist", [b, 4 * reg_max, a], "float32",
                       f"DFL logits, {reg_max} bins x LTRB per anchor (P3, P4, P5 row-major)"),
            TensorSpec("cls_logits", [b, len(self.names), a], "float32",
                       "class logits (sigmoid -> scores) per anchor"),
        ]
        return inputs, outputs


class Exporter(ABC):
    """One export target. Subclasses implement :meth:`build`; see the module docstring."""

    target: ClassVar[str] = ""
    #: dataclass of this target's extra options (None: it has none)
    options_type: ClassVar[type | None] = None

    @abstractmethod
    def build(self, job: ExportJob, staging: Path) -> Artifact:
        """Write the model file(s) into ``staging`` and describe them."""

    def embed_metadata(self, model_path: Path, meta: BundleMeta) -> None:  # noqa: B027
        """Store ``meta.to_json()`` inside the model file under META_KEY, if the format can."""

    def readme_section(self, meta: BundleMeta, job: ExportJob) -> str:
        """Board-specific instructions for the bundle's README.md (Markdown)."""
        return ""


# --------------------------------------------------------------------------------- the pipeline


def load_exporter(spec: TargetSpec) -> Exporter:
    module, cls = spec.exporter.split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("edge_yolo"):
            raise TargetError(
                f"the exporter for target {spec.name!r} is not available ({module})"
            ) from e
        raise
    return getattr(mod, cls)()


def run_export(weights: str | os.PathLike, options: ExportOptions) -> Path:
    """Export a checkpoint to a bundle directory and return its path."""
    spec, precision, device = resolve(options.target, options.precision)  # before any work
    weights = Path(weights)
    if not weights.is_file():
        raise ExportError(f"{weights}: no such checkpoint file")
    exporter = load_exporter(spec)
    target_options = options.target_options
    if exporter.options_type is not None:
        if target_options is None:
            target_options = exporter.options_type()
        elif not isinstance(target_options, exporter.options_type):
            raise TargetError(
                f"target {spec.name!r} takes {exporter.options_type.__name__} options, got "
                f"{type(target_options).__name__}"
            )
    elif target_options is not None:
        raise TargetError(f"target {spec.name!r} takes no target options")

    import torch

    threads = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        return _run(weights, options, spec, precision, device, exporter, target_options)
    finally:
        torch.set_num_threads(threads)


def _run(
    weights: Path,
    options: ExportOptions,
    spec: TargetSpec,
    precision: str,
    device: DeviceProfile | None,
    exporter: Exporter,
    target_options: Any,
) -> Path:
    t0 = time.perf_counter()
    job = ExportJob(options, spec, precision, device, weights, target_options)
    if precision == "int8" and job.calib_source is None:
        job.calibration_images()  # raises: says to pass --calib, before any conversion
    name = options.name or f"{job.model_name}-{spec.name}-{precision}"
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    dest = out / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out))
    try:
        artifact = exporter.build(job, staging)
        meta = BundleMeta(
            model=job.model_name,
            names=job.names,
            imgsz=[job.imgsz, job.imgsz],
            target=spec.name,
            precision=precision,
            backend=spec.backend,
            model_file=artifact.model_file,
            inputs=artifact.inputs,
            outputs=artifact.outputs,
            layout=artifact.layout,
            strides=list(job.yolo.strides),
            reg_max=job.yolo.reg_max,
            quantization=artifact.quantization,
            calibration=job.calibration,
            source_checkpoint_sha256=job.checkpoint_sha256,
            extra={
                **artifact.extra,
                "device": device.name if device else None,
                "device_threads": device.threads if device else None,
                "dynamic_batch": options.dynamic,
                "source_checkpoint": weights.name,
            },
        )
        meta.accuracy, references = verify_artifact(job, staging, meta)
        np.savez_compressed(staging / REFERENCE_FILE, **references)
        meta.references = [REFERENCE_FILE]
        meta.extra["export_seconds"] = round(time.perf_counter() - t0, 2)
        exporter.embed_metadata(staging / artifact.model_file, meta)
        meta.write(staging)
        atomic_write_text(staging / "README.md", bundle_readme(meta, job, exporter, name))
        _default_permissions(staging)
        replace_dir(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    LOGGER.info("wrote %s in %.1f s", dest, time.perf_counter() - t0)
    return dest


def verify_artifact(
    job: ExportJob, staging: Path, meta: BundleMeta
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run the artifact on this host: reference inputs/outputs and agreement with the float model.

    Agreement is measured on the calibration images (or synthetic scenes): sigmoid-score and
    box-distribution-logit differences against the fused float PyTorch model.
    """
    from ..runtime.backends import get_backend

    backend_name = job.spec.verify_backend
    backend = get_backend(backend_name)(
        staging / meta.model_file, meta, threads=job.options.threads
    )
    n = max(job.options.num_references, job.options.agreement_images)
    images = job.sample_images(n)
    score_diff, box_diff, top1 = [], [], []
    references: dict[str, list[np.ndarray]] = {"images": [], "box_dist": [], "cls_logits": []}
    for i, image in enumerate(images):
        blob = preprocess(image, job.imgsz, layout=meta.layout)[0]
        box, cls = backend.infer(blob)
        nchw = blob if meta.layout == "NCHW" else blob.transpose(0, 3, 1, 2)
        fbox, fcls = job.float_outputs(nchw)
        if i < job.options.num_references:
            references["images"].append(blob[0])
            references["box_dist"].append(box[0])
            references["cls_logits"].append(cls[0])
        score_diff.append(np.abs(_sigmoid(cls) - _sigmoid(fcls)))
        box_diff.append(np.abs(box - fbox))
        # does the artifact pick the float model's best class at the anchors that matter?
        fscore = _sigmoid(fcls[0]).max(0)
        sel = fscore >= min(0.25, float(np.quantile(fscore, 0.99)))
        top1.append(np.mean(cls[0][:, sel].argmax(0) == fcls[0][:, sel].argmax(0)))
    scores = np.concatenate([d.ravel() for d in score_diff])
    boxes = np.concatenate([d.ravel() for d in box_diff])
    accuracy = {
        "reference": "fused float PyTorch model",
        "measured_with": backend_name,
        "images": len(images),
        "image_source": job.options.calib or (
            job.calibration.dataset if job.calibration else "synthetic scenes"
        ),
        "score_mean_abs_diff": float(scores.mean()),
        "score_max_abs_diff": float(scores.max()),
        "box_dist_mean_abs_diff": float(boxes.mean()),
        "box_dist_max_abs_diff": float(boxes.max()),
        "top_class_agreement": float(np.mean(top1)),
    }
    return accuracy, {k: np.stack(v) for k, v in references.items()}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float32)))


def _default_permissions(directory: Path) -> None:
    # mkdtemp/mkstemp create owner-only entries; a bundle is meant to be copied and shared.
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def replace_dir(src: Path, dest: Path) -> None:
    """Move a finished staging directory to ``dest``, replacing an older bundle there."""
    if dest.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
        os.replace(dest, trash / dest.name)
        os.replace(src, dest)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(src, dest)


# ------------------------------------------------------------------------------------- helpers


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_images(images: list[np.ndarray]) -> str:
    """Hash over the decoded pixels (shape + bytes, in order): identical calibration sets match
    whatever their file encoding."""
    h = hashlib.sha256()
    for im in images:
        h.update(str(im.shape).encode())
        h.update(np.ascontiguousarray(im).tobytes())
    return h.hexdigest()


def load_calibration_images(source: str, n: int) -> list[np.ndarray]:
    """Up to ``n`` BGR images from a dataset spec or an image folder (via ``edge_yolo.data``)."""
    try:
        from ..data import load_images
    except ImportError:
        from ..data.formats import load_images
    try:
        images = load_images(source, n)
    except (OSError, ValueError) as e:
        raise ExportError(f"calibration images from {source}: {e}") from e
    if not images:
        raise ExportError(f"{source}: no calibration images found")
    return images


def synthetic_image(imgsz: int, seed: int = 0) -> np.ndarray:
    """A deterministic 4:3 BGR scene (smooth background + filled shapes) for references."""
    import cv2

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


def bundle_readme(meta: BundleMeta, job: ExportJob, exporter: Exporter, bundle_name: str) -> str:
    """README.md of a bundle: what it is, how to install and run it, how to verify it."""
    spec = job.spec
    install = job.device.install if job.device else spec.install
    board = f" for `{job.device.name}`" if job.device else ""
    calib = meta.calibration
    acc = meta.accuracy
    lines = [
        f"# {meta.model} {meta.target} {meta.precision}{board}",
        "",
        f"{spec.description}. Input {meta.imgsz[0]}x{meta.imgsz[1]} {meta.layout} RGB in [0, 1] "
        f"(letterboxed, pad 114), {meta.num_classes} classes; outputs `box_dist` (DFL logits) and "
        "`cls_logits`; decode and NMS run in numpy inside `edge_yolo`.",
        "",
        f"- model file: `{meta.model_file}` (backend `{meta.backend}`, quantization "
        f"`{meta.quantization}`)",
        f"- calibration: {calib.num_images} images from `{calib.dataset}` (sha256 {calib.sha256})"
        if calib else "- calibration: none (no integer quantization)",
        f"- agreement with the float model on {acc['images']} images ({acc['image_source']}): "
        f"mean |score diff| {acc['score_mean_abs_diff']:.2e}, max {acc['score_max_abs_diff']:.2e}, "
        f"top-class agreement {acc['top_class_agreement']:.3f}",
        f"- source checkpoint sha256: `{meta.source_checkpoint_sha256}`",
        "",
        "## Install on the device",
        "```",
        install,
        "```",
    ]
    if job.device and job.device.notes:
        lines += ["", job.device.notes.strip()]
    lines += [
        "",
        "## Run",
        "```python",
        "import cv2",
        "from edge_yolo import Detector",
        "",
        f'detector = Detector("{bundle_name}")  # this bundle directory',
        'detections = detector(cv2.imread("image.jpg"))',
        "print(detections.xyxy, detections.scores, detections.class_ids)",
        "```",
    ]
    section = exporter.readme_section(meta, job).strip()
    if section:
        lines += ["", section]
    lines += [
        "",
        "## Verify the device computes what the host computed",
        f"`{REFERENCE_FILE}` holds letterboxed inputs (`images`, in the model's layout) and the "
        "raw outputs the export host computed with this artifact (`box_dist`, `cls_logits`). Run "
        "the inputs through the device's backend and compare: float artifacts agree to about 1e-4, "
        "integer ones to a few quantization steps.",
        "",
    ]
    return "\n".join(lines)


def options_dict(obj: Any) -> dict[str, Any]:
    """A dataclass (or None) as a JSON-friendly dict, for the bundle's ``extra``."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else {}
