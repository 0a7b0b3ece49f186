"""The README.md written into every bundle: what it is, how to install, run and verify it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..runtime.bundle import BundleMeta
from ..runtime.verify import agreement_text
from .base import REFERENCE_FILE, Exporter

if TYPE_CHECKING:
    from .job import ExportJob


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
        f"- calibration: {calib.num_images} images from `{calib.dataset}` [{calib.split}] "
        f"(sha256 {calib.sha256})"
        if calib else "- calibration: none (no integer quantization)",
        f"- agreement with the float model: {agreement_text(acc)}",
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


def console_summary(bundle: Path, meta: BundleMeta) -> str:
    """What ``edge-yolo export`` prints: where the bundle is and how big, its precision and
    input size with where each came from (given, board profile, checkpoint), the calibration
    images used against those asked for, and its agreement with the float model."""
    from ..errors import option

    files = [p for p in bundle.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    # what the runtime loads (the .xml + .bin pair, or the one model file)
    model = sum(p.stat().st_size for p in files if p.stem == Path(meta.model_file).stem)
    sources = meta.extra.get("settings_from") or {}

    def source(key: str) -> str:
        said = sources.get(key, "")
        return f"from {option(key)}" if said == "given" else said

    kind = meta.extra.get("quantization_kind")
    quant = meta.quantization + (f", {kind.upper()}" if kind else "")
    lines = [  # the path alone first: a script takes it with `head -1`
        str(bundle),
        f"  bundle       {size / 1e6:.1f} MB (model {model / 1e6:.1f} MB), {meta.model} for "
        f"{meta.extra.get('device') or meta.target} on {meta.backend}",
        f"  precision    {meta.precision} ({quant}; {source('precision')})",
        f"  input size   {meta.imgsz[0]}x{meta.imgsz[1]} ({source('imgsz')})",
    ]
    calib = meta.calibration
    if calib is not None and calib.num_images:
        asked = calib.requested or calib.num_images
        short = "" if calib.num_images >= asked else ", all the set has"
        split = f" [{calib.split}]" if calib.split else ""
        lines.append(f"  calibration  {calib.num_images} images of {asked} asked "
                     f"({source('calib_size')}{short}) from {calib.dataset}{split}")
    if meta.extra.get("float_blocks"):
        lines.append(f"  kept float   {', '.join(meta.extra['float_blocks'])}")
    acc = meta.accuracy
    if acc:
        lines.append(f"  agreement    {agreement_text(acc)}")
    return "\n".join(lines)
