"""``run_export``: the steps every target shares, in order.

Capability check before any work (target, precision and every option the target does not
honour), checkpoint loading (PGI branch dropped, fused), the target's ``build`` in a staging
directory beside the destination, a run of the artifact on this host through its runtime
backend (``reference.npz`` and the agreement with the float model, measured by
:func:`edge_yolo.runtime.verify.compare_outputs`), ``edge_yolo.json``, ``README.md``, and an
atomic rename into ``<out>/<model>-<target>-<precision>/``.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import OUTPUT_NAMES
from ..errors import option
from ..fileio import atomic_write_text
from ..runtime.bundle import BundleMeta, file_checksums
from ..runtime.processing import preprocess
from ..runtime.verify import compare_outputs
from .base import REFERENCE_FILE, Exporter, ExportError, ExportOptions
from .job import ExportJob
from .readme import bundle_readme
from .targets import SHARED_OPTIONS, DeviceProfile, TargetError, TargetSpec, resolve

LOGGER = logging.getLogger(__name__)


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


def check_shared_options(spec: TargetSpec, options: ExportOptions) -> None:
    """Refuse a shared option the target does not honour, naming the option and the target."""
    for name, shared in SHARED_OPTIONS.items():
        if getattr(options, name) is not None and name not in spec.shared_options:
            takes = ", ".join(SHARED_OPTIONS[n].flag for n in spec.shared_options) or "none"
            raise TargetError(
                f"{shared.flag}: target {spec.name!r} does not support this option "
                f"(its shared options: {takes})"
            )


def target_options(spec: TargetSpec, exporter: Exporter, given: Any) -> Any:
    """The target's options dataclass: its defaults, an instance, or built from a dict."""
    kind = exporter.options_type
    if kind is None:
        if given:
            raise TargetError(f"target {spec.name!r} takes no target options")
        return None
    if given is None:
        return kind()
    if isinstance(given, dict):
        known = {f.name for f in dataclasses.fields(kind)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise TargetError(
                f"target {spec.name!r} has no option(s) {', '.join(unknown)}; it takes "
                f"{', '.join(sorted(known))}"
            )
        return kind(**given)
    if not isinstance(given, kind):
        raise TargetError(
            f"target {spec.name!r} takes {kind.__name__} options, got {type(given).__name__}"
        )
    return given


def run_export(weights: str | os.PathLike, options: ExportOptions) -> Path:
    """Export a checkpoint to a bundle directory and return its path."""
    spec, precision, device = resolve(options.target, options.precision)  # before any work
    check_shared_options(spec, options)
    weights = Path(weights)
    if not weights.is_file():
        raise ExportError(f"{weights}: no such checkpoint file")
    exporter = load_exporter(spec)
    opts = target_options(spec, exporter, options.target_options)

    import torch

    threads = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        return _run(weights, options, spec, precision, device, exporter, opts)
    finally:
        torch.set_num_threads(threads)


def _run(
    weights: Path,
    options: ExportOptions,
    spec: TargetSpec,
    precision: str,
    device: DeviceProfile | None,
    exporter: Exporter,
    opts: Any,
) -> Path:
    t0 = time.perf_counter()
    job = ExportJob(options, spec, precision, device, weights, opts)
    if job.needs_calibration:
        job.calibration()  # fails early (e.g. "pass --calib"), before any conversion
    if options.max_drop is not None:
        job.choose_float_blocks(options.max_drop)
    # named for the board when there is one: rpi4 and rpi5 exports never replace each other;
    # a QAT bundle never replaces the PTQ one either
    name = options.name or (f"{job.model_name}-{device.name if device else spec.name}-"
                            f"{precision}{'-qat' if job.qat else ''}")
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    dest = out / name
    if dest.exists() and not options.force:
        raise ExportError(f"{dest} already exists; pass {option('force', True, flag='--force')} to "
                          f"replace it (or {option('name')})")
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
            calibration=job.calibration_provenance,
            source_checkpoint_sha256=job.checkpoint_sha256,
            extra={
                **artifact.extra,
                **job.quantization_record(),
                "device": device.name if device else None,
                "device_threads": device.threads if device else None,
                "dynamic_batch": job.dynamic,
                "source_checkpoint": weights.name,
                "settings_from": job.sources,
            },
        )
        meta.accuracy, references = verify_artifact(job, staging, meta)
        np.savez_compressed(staging / REFERENCE_FILE, **references)
        meta.references = [REFERENCE_FILE]
        meta.extra["export_seconds"] = round(time.perf_counter() - t0, 2)
        exporter.embed_metadata(staging / artifact.model_file, meta)
        atomic_write_text(staging / "README.md", bundle_readme(meta, job, exporter, name))
        meta.files = file_checksums(staging)  # the Detector checks them at load
        meta.write(staging)
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
    """Run the artifact on this host: reference inputs/outputs, and its agreement with the
    float model on the calibration images (or synthetic scenes)."""
    from ..runtime.backends import get_backend

    backend_name = job.spec.verify_backend
    backend = get_backend(backend_name)(
        staging / meta.model_file, meta, threads=job.options.threads
    )
    n = max(job.options.num_references, job.options.agreement_images)
    images, image_source = job.sample_images(n)
    got: list[tuple[np.ndarray, np.ndarray]] = []
    want: list[tuple[np.ndarray, np.ndarray]] = []
    blobs = []
    for image in images:
        blob = preprocess(image, job.imgsz, layout=meta.layout)[0]
        nchw = blob if meta.layout == "NCHW" else blob.transpose(0, 3, 1, 2)
        got.append(backend.infer(blob))
        want.append(job.float_outputs(nchw))
        blobs.append(blob[0])
    stacked = [np.concatenate([g[k] for g in got]) for k in (0, 1)]
    reference = [np.concatenate([w[k] for w in want]) for k in (0, 1)]
    accuracy = {
        "reference": "fused float PyTorch model",
        "measured_with": backend_name,
        "images": len(images),
        "image_source": image_source,
        **compare_outputs(*stacked, *reference, job.yolo.reg_max),
    }
    k = job.options.num_references
    references = {"images": np.stack(blobs[:k])}
    references.update({name: out[:k] for name, out in zip(OUTPUT_NAMES, stacked)})
    return accuracy, references


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
