"""``edge-yolo report``: what quantization and conversion cost, per target, in numbers a user
can trust.

Every row (the float PyTorch baseline, then each artifact: FP32/FP16 and INT8 per target) goes
through the same runtime ``Detector`` pre/post-processing, the same evaluator and the same
settings (:data:`~edge_yolo.eval.val.EVAL`), on the same images, so an FP32 export scores what
the float model scores and every difference is the artifact's. Per row: mAP50-95 and mAP50,
the drop against the baseline with a 95 % interval from a paired bootstrap over images (with
40 val images a user can tell a drop from noise), per-class AP deltas, file size, median
latency on this host, and agreement with the baseline's detections. Written as JSON, Markdown
(also printed) and one self-contained HTML page with plots; ``--max-drop`` turns it into a
gate (exit 1). Each bundle records its own row in its ``edge_yolo.json``.
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from .fidelity import CANDIDATE_CONF, REFERENCE_CONF
from .val import EVAL, Collected, collect, resamples_of

#: libraries whose versions a report records (those that produced or ran a row)
TOOLCHAIN = ("edge-yolo", "torch", "openvino", "nncf", "onnxruntime", "onnx", "ai-edge-litert",
             "ai-edge-quantizer", "litert-torch", "faster-coco-eval", "numpy", "opencv-python")
AGREEMENT_CONF = REFERENCE_CONF  # the boxes a user sees: agreement is measured on these
AGREEMENT_IOU = 0.5


@dataclass
class Row:
    """One evaluated model: the float baseline or an artifact."""

    name: str
    target: str
    precision: str
    quantization: str  # "float", "ptq", "qat"
    backend: str
    path: str
    map50_95: float
    map50: float
    per_class: dict[str, float]
    size_mb: float | None = None
    latency_ms: float | None = None
    delta: float = 0.0  # mAP50-95 points against the baseline (negative: a drop)
    delta_ci: tuple[float, float] = (0.0, 0.0)
    delta_map50: float = 0.0
    per_class_delta: dict[str, float] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)
    #: mAP50-95 x 100 against the float model's own boxes (see edge_yolo.eval.fidelity)
    fidelity: float = 100.0
    fidelity_ci: tuple[float, float] = (0.0, 0.0)  # 95 % interval of fidelity - 100
    ships: bool | None = None  # set where PTQ and QAT compete for one target
    calibration: dict[str, Any] | None = None
    calibration_method: str | None = None
    float_blocks: list[str] = field(default_factory=list)  # kept in float (mixed precision)
    empty_images: int = 0  # images with a confident float detection and none here
    skipped: int = 0


# ------------------------------------------------------------------------------ measuring


def baseline_scores(base: Collected, resamples: int, seed: int = 0) -> list[float]:
    """The baseline's mAP50-95 on each resample (a report computes them once for all rows)."""
    return [base.evaluate(idx).map50_95
            for idx in resamples_of(len(base.paths), resamples, seed)]


def paired_bootstrap(base: Collected, other: Collected, resamples: int, seed: int = 0,
                     base_scores: list[float] | None = None) -> tuple[float, float]:
    """95 % interval of the mAP50-95 difference (points), resampling images with replacement
    and scoring both models on the same resample each time (``base_scores``: the baseline's
    scores from :func:`baseline_scores`, when already known)."""
    if base.paths != other.paths:
        raise ValueError("the two evaluations did not see the same images")
    if base_scores is None:
        base_scores = baseline_scores(base, resamples, seed)
    deltas = []
    for idx, a in zip(resamples_of(len(base.paths), resamples, seed), base_scores):
        b = other.evaluate(idx).map50_95
        if not (math.isnan(a) or math.isnan(b)):
            deltas.append(100 * (b - a))
    if not deltas:
        return (math.nan, math.nan)
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    return float(lo), float(hi)


def bootstrap_intervals(base: Collected, others: list[Collected], resamples: int,
                        workers: int | None = None) -> list[tuple[float, float]]:
    """:func:`paired_bootstrap` of every row against one baseline: the baseline's resample
    scores once, then the rows spread over processes (each COCO evaluation is single-threaded
    and a report runs thousands of them)."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    base_scores = baseline_scores(base, resamples)
    workers = min(len(others), workers or os.cpu_count() or 1)
    if workers <= 1 or resamples == 0:
        return [paired_bootstrap(base, o, resamples, base_scores=base_scores) for o in others]
    # spawn, not fork: the exporters leave threads behind (JAX, OpenVINO) that fork copies
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(paired_bootstrap, base, o, resamples, 0, base_scores) for o in others]
        return [job.result() for job in jobs]


def agreement(base: Collected, other: Collected) -> dict[str, float]:
    """How far the artifact's visible boxes (score >= 0.25) are the baseline's: the share of
    baseline boxes matched (same class, IoU >= 0.5, greedy by score), their mean IoU and mean
    |score difference|, and how many boxes each found."""
    matched = total = found = 0
    ious, errors = [], []
    for ours, theirs in zip(base.predictions, other.predictions):
        bx, bs, bc = (a[ours[1] >= AGREEMENT_CONF] for a in ours)
        ox, os_, oc = (a[theirs[1] >= AGREEMENT_CONF] for a in theirs)
        total += len(bs)
        found += len(os_)
        free = np.ones(len(os_), bool)
        for i in np.argsort(-bs, kind="stable"):
            if not free.any():
                break
            iou = _iou(bx[i], ox) * free * (oc == bc[i])
            j = int(iou.argmax())
            if iou[j] >= AGREEMENT_IOU:
                free[j] = False
                matched += 1
                ious.append(float(iou[j]))
                errors.append(abs(float(bs[i]) - float(os_[j])))
    return {
        "matched_share": matched / total if total else 1.0,
        "mean_iou": float(np.mean(ious)) if ious else math.nan,
        "score_error": float(np.mean(errors)) if errors else math.nan,
        "baseline_boxes": total,
        "boxes": found,
    }


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), 1)
    area = np.prod(box[2:] - box[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], 1) - inter
    return np.where(area > 0, inter / np.maximum(area, 1e-12), 0.0)


def median_latency(detector: Any, image: np.ndarray, runs: int = 20) -> float:
    """End-to-end milliseconds (pre + inference + post) of one image, median after warm-up."""
    for _ in range(2):
        detector(image)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        detector(image)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def bundle_size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(f.stat().st_size for f in files) / 1e6


def toolchain() -> dict[str, str]:
    out = {}
    for dist in TOOLCHAIN:
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


# ------------------------------------------------------------------------------ the report


@dataclass
class FakeQuant:
    """An in-memory fake-quantized torch model (PTQ in torch): the row that tells a
    converter's error from quantization's, beside the runtime's PTQ row."""

    name: str
    target: str
    model: Any
    calibration: dict[str, Any] | None = None


def fake_quant_ptq(weights: Path, target: str, calib: Any) -> FakeQuant:
    """The float checkpoint quantized for ``target`` in torch by NNCF with the same
    calibration set as the export, without fine-tuning."""
    from dataclasses import asdict as as_dict

    from ..models import load_model
    from ..quant.qat import quantize_model

    model, ckpt = load_model(weights)
    if model.aux is not None:
        model.drop_auxiliary()
    model.fuse()
    imgsz = int(ckpt.get("imgsz") or 640)
    quantized = quantize_model(model, calib, imgsz, target)
    return FakeQuant(f"torch fake-quant {target} int8 PTQ", target, quantized,
                     as_dict(calib.provenance()))


def _detector(source: Path | FakeQuant, weights: Path, baseline: Any, names: list[str],
              threads: int | None) -> Any:
    from ..runtime.detector import Detector

    if isinstance(source, FakeQuant):
        return Detector.from_model(source.model, imgsz=baseline.imgsz, names=names,
                                   threads=threads)
    if source == weights:
        return baseline
    return Detector(source, threads=threads, backend=host_backend(Path(source)))


def host_backend(path: Path) -> str | None:
    """The backend that runs a bundle here: its own, unless that runtime exists only on the
    device (TensorRT), then the target's host stand-in (onnxruntime on the same ONNX)."""
    from ..export.targets import TARGETS
    from ..runtime.backends import get_backend
    from ..runtime.bundle import BundleMeta

    if not path.is_dir():
        return None
    meta = BundleMeta.read(path)
    spec = TARGETS.get(meta.target)
    if spec is None or not spec.host_backend or get_backend(meta.backend).available():
        return None
    return spec.host_backend


def _describe(source: Path | FakeQuant, weights: Path, det: Any) -> dict[str, Any]:
    """name, target, precision, kind, backend, calibration of one row."""
    meta = det.meta
    if isinstance(source, FakeQuant):
        return {"name": source.name, "target": source.target, "precision": "int8",
                "quantization": "ptq", "backend": "torch (fake-quant)",
                "calibration": source.calibration, "calibration_method": "nncf min-max"}
    if source == weights:
        return {"name": f"torch {meta.model} (float baseline)", "target": "torch",
                "precision": "fp32", "quantization": "float", "backend": "torch",
                "calibration": None, "calibration_method": None}
    if Path(source).suffix == ".pt":  # a QAT checkpoint: its fake-quantized torch model
        qat = (det.backend.qat or {}) if hasattr(det.backend, "qat") else {}
        target = qat.get("target", "?")
        init = qat.get("stage") == "init"
        return {"name": f"torch fake-quant {target} int8 {qat_label(qat)}",
                "target": target,
                "precision": "int8",
                "quantization": ("qat-init" if init else "qat") if qat else "float",
                "backend": "torch (fake-quant)", "calibration": qat.get("calibration"),
                "calibration_method": "qat (learned ranges)"}
    kind = meta.extra.get("quantization_kind", "ptq") if meta.precision == "int8" else "float"
    name = f"{meta.target} {meta.precision}" + (f" {kind.upper()}" if kind != "float" else "")
    if kind == "qat":
        name = name.removesuffix(" QAT") + " " + qat_label(meta.extra.get("qat", {}))
    if meta.extra.get("float_blocks"):
        name += f" +{len(meta.extra['float_blocks'])} float blocks"
    return {"name": name, "target": meta.target, "precision": meta.precision,
            "quantization": kind, "backend": det.backend.name,
            "calibration": asdict(meta.calibration) if meta.calibration else None,
            "calibration_method": calibration_method(meta.extra, kind),
            "float_blocks": meta.extra.get("float_blocks") or []}


def qat_label(record: dict[str, Any]) -> str:
    """``QAT (pgi, 300 updates)``, or ``QAT init (pgi)`` for a run's starting point."""
    if record.get("stage") == "init":
        return f"QAT init ({record.get('variant')})"
    updates = record.get("updates")
    return f"QAT ({record.get('variant')}" + (f", {updates} updates)" if updates else ")")


def calibration_method(extra: dict[str, Any], kind: str) -> str | None:
    """How a bundle's int8 ranges were found, from what its exporter recorded."""
    if kind == "qat":
        return "qat (learned ranges)"
    if kind != "ptq":
        return None
    if "qdq" in extra:
        return f"onnxruntime {extra['qdq'].get('calibrate_method', 'minmax')}"
    if "tflite_options" in extra:
        return f"ai-edge-quantizer {extra['tflite_options'].get('calib_ranges', 'minmax')}"
    if "nncf_preset" in extra:
        return f"nncf min-max, {extra['nncf_preset']} preset"
    return None


def build_report(
    weights: Path,
    data: str,
    bundles: list[Path | FakeQuant],
    *,
    split: str = "val",
    fidelity_data: str | None = None,
    max_frames: int = 1000,
    resamples: int = 200,
    threads: int | None = None,
    latency_runs: int = 20,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate the float checkpoint and every other source on ``data``/``split``: bundles,
    QAT checkpoints (fake-quantized torch) and in-memory :class:`FakeQuant` models; and each
    one's fidelity to the float model on ``fidelity_data`` (a dataset, a folder of images or
    a video, labels not needed; default: the same images). The report as a JSON-ready dict."""
    from ..data import load_dataset, spec_kwargs
    from ..data.unlabeled import open_images
    from ..runtime.detector import Detector
    from .fidelity import measure_all

    baseline = Detector(weights, threads=threads)
    imgsz = baseline.imgsz[0]
    dataset = load_dataset(data, split=split, **spec_kwargs(data, imgsz))
    extra = None if fidelity_data is None else open_images(
        fidelity_data, list(baseline.names), split=split, imgsz=imgsz, max_frames=max_frames)
    image = dataset[0].image
    runs: list[tuple[Row, Collected]] = []
    seen: list[Collected] = []  # what fidelity is measured on, per row
    for source in [weights, *bundles]:
        det = _detector(source, weights, baseline, list(baseline.names), threads)
        got = collect(det, dataset, progress=progress)
        seen.append(got if extra is None else collect(det, extra, progress=progress))
        result = got.evaluate()
        about = _describe(source, weights, det)
        is_file = not isinstance(source, FakeQuant) and Path(source).is_dir()  # a bundle
        row = Row(
            **about, path=str(source.name if isinstance(source, FakeQuant) else source),
            map50_95=result.map50_95, map50=result.map50, per_class=result.per_class,
            size_mb=round(bundle_size_mb(Path(source)), 3) if is_file else None,
            latency_ms=round(median_latency(det, image, latency_runs), 2),
            skipped=len(got.skipped),
        )
        runs.append((row, got))
    _name_apart([row for row, _ in runs])
    base_row, base = runs[0]
    intervals = bootstrap_intervals(base, [got for _, got in runs[1:]], resamples, threads)
    fidelities = measure_all(seen[0], seen, resamples, workers=threads)
    for (row, _), fid in zip(runs, fidelities):
        row.fidelity, row.fidelity_ci = fid.score, fid.ci
    ships = choose_shipped([row for row, _ in runs], fidelities)
    for (row, got), interval in zip(runs[1:], intervals):
        row.delta = 100 * (row.map50_95 - base_row.map50_95)
        row.delta_map50 = 100 * (row.map50 - base_row.map50)
        row.delta_ci = interval
        row.per_class_delta = {
            k: 100 * (v - base_row.per_class[k]) for k, v in row.per_class.items()
            if not (math.isnan(v) or math.isnan(base_row.per_class[k]))
        }
        row.agreement = agreement(base, got)
        row.empty_images = empty_where_float_is_confident(base, got)
    return {
        "dataset": {"data": data, "split": split, "images": len(base.paths),
                    "skipped": base.skipped, "classes": base.names},
        "settings": EVAL.to_dict(),
        "bootstrap": {"resamples": resamples, "interval": 0.95, "paired_over": "images"},
        "fidelity": {"data": fidelity_data or f"{data} [{split}]", "images": len(seen[0].paths),
                     "labels_needed": False, "reference_conf": REFERENCE_CONF,
                     "candidate_conf": CANDIDATE_CONF,
                     "reference_boxes": fidelities[0].reference_boxes},
        "host": {"machine": platform.machine(), "processor": platform.processor() or "",
                 "threads": threads},
        "toolchain": toolchain(),
        "ships": ships,
        "rows": [asdict(r) for r, _ in runs],
    }


def choose_shipped(rows: list[Row], fidelities: list[Any]) -> list[dict[str, Any]]:
    """Per target with both PTQ and QAT artifacts: the int8 artifact that ships is the one
    closest to the float model (fidelity, on images no model trained on), so a QAT run that
    did worse than PTQ never ships; says by how much and whether the interval of the
    difference (paired resamples) resolves it. Sets ``row.ships``."""
    from .fidelity import difference_interval

    out = []
    by_target: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        if row.precision == "int8" and row.quantization in ("ptq", "qat") \
                and not is_diagnostic(asdict(row)):
            by_target.setdefault(row.target, []).append(i)
    for target, idx in by_target.items():
        kinds = {rows[i].quantization for i in idx}
        if kinds != {"ptq", "qat"} or any(math.isnan(rows[i].fidelity) for i in idx):
            continue
        best = max(idx, key=lambda i: rows[i].fidelity)
        other = max((i for i in idx if rows[i].quantization != rows[best].quantization),
                    key=lambda i: rows[i].fidelity)
        lo, hi = difference_interval(fidelities[best], fidelities[other])
        resolved = lo > 0
        for i in idx:
            rows[i].ships = i == best
        out.append({
            "target": target, "ships": rows[best].name, "over": rows[other].name,
            "kind": rows[best].quantization, "fidelity": rows[best].fidelity,
            "over_fidelity": rows[other].fidelity, "difference_ci": (lo, hi),
            "resolved": resolved,
            "why": (f"fidelity {rows[best].fidelity:.2f} against {rows[other].fidelity:.2f} "
                    f"(difference 95% CI [{lo:+.2f}, {hi:+.2f}]: "
                    + ("resolved" if resolved else "within noise; the higher one ships")
                    + ")"),
        })
    return out


def _name_apart(rows: list[Row]) -> None:
    """Rows that would read the same (two int8 PTQ bundles of one target, made with other
    settings) carry their bundle's folder name too."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.name] = counts.get(row.name, 0) + 1
    for row in rows:
        if counts[row.name] > 1:
            row.name = f"{row.name} [{Path(row.path).name}]"


def empty_where_float_is_confident(base: Collected, other: Collected,
                                   confident: float = 0.5) -> int:
    """Images where the float model finds something with score >= ``confident`` and the
    artifact finds nothing at all above the agreement threshold: the failure users report
    as "INT8 finds nothing"."""
    n = 0
    for ours, theirs in zip(base.predictions, other.predictions):
        if (ours[1] >= confident).any() and not (theirs[1] >= AGREEMENT_CONF).any():
            n += 1
    return n


#: what ``--max-drop`` can gate on: the ground-truth mAP50-95 drop, or the fidelity drop
GATES = {"map": "mAP50-95 points (against the ground truth)",
         "fidelity": "fidelity points (against the float model's own boxes)"}


def gate(report: dict[str, Any], max_drop: float, on: str = "map") -> list[str]:
    """Rows that drop more than ``max_drop`` points on measure ``on`` (:data:`GATES`): what
    fails the gate. A row whose fidelity cannot be measured (the float model finds nothing
    above the reference confidence) fails a fidelity gate: nothing was checked."""
    if on not in GATES:
        raise ValueError(f"gate on one of {', '.join(GATES)}, not {on!r}")
    failed = []
    for r in report["rows"][1:]:
        if is_diagnostic(r):
            continue
        drop = -r["delta"] if on == "map" else 100.0 - r["fidelity"]
        if math.isnan(drop) or drop > max_drop:
            failed.append(f"{r['name']}: {drop:.2f} {GATES[on].split(' (')[0]} > {max_drop:g}")
    return failed


def is_diagnostic(row: dict[str, Any]) -> bool:
    """A fake-quant torch row explains a drop; it is not an artifact that ships."""
    return str(row.get("backend", "")).endswith("(fake-quant)")


def record_rows(report: dict[str, Any]) -> None:
    """Each bundle keeps its own row (``accuracy["report"]``) in its ``edge_yolo.json``."""
    from ..runtime.bundle import BundleMeta

    for row in report["rows"][1:]:
        path = Path(row["path"])
        if path.is_dir():
            meta = BundleMeta.read(path)
            meta.accuracy["report"] = {
                k: row[k] for k in ("map50_95", "map50", "delta", "delta_ci", "agreement",
                                    "fidelity", "fidelity_ci", "ships")
            } | {"dataset": report["dataset"]["data"], "split": report["dataset"]["split"],
                 "images": report["dataset"]["images"], "settings": report["settings"]}
            meta.write(path)
