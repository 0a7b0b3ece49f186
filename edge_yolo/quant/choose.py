"""Never ship worse than PTQ: ``export --compare-ptq`` with a QAT checkpoint.

A QAT run can end further from the float model than plain post-training quantization
(too few updates, a learning rate that moved the weights off their optimum, labels that
pull away from what the float model learnt). When both are at hand, the one that ships is
the one closer to the float model: both artifacts are exported for the same target, run by
the target's own runtime (or its host stand-in), and scored by fidelity
(:mod:`edge_yolo.eval.fidelity`) on the QAT run's held-out split (images it never trained
on). The bundle at the requested name is the better one; its ``edge_yolo.json`` records the
comparison under ``extra["compared_with"]`` and says why.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from .qat_state import QATError


def ship_better_than_ptq(qat_weights: Path, qat_bundle: Path, options: Any,
                         log: Any = print) -> dict[str, Any]:
    """Export PTQ from the QAT run's float checkpoint beside ``qat_bundle``, score both, and
    leave the better at ``qat_bundle``; returns the decision (also recorded in the bundle)."""
    from ..data.unlabeled import carve, open_images
    from ..eval.fidelity import difference_interval, measure_all
    from ..eval.report import host_backend
    from ..eval.val import collect
    from ..export.pipeline import replace_dir, run_export
    from ..fileio import sha256_file
    from ..models import load_checkpoint
    from ..runtime.bundle import BundleMeta
    from ..runtime.detector import Detector

    record = load_checkpoint(qat_weights).get("qat")
    if record is None:
        raise QATError(f"{qat_weights}: --compare-ptq compares a QAT checkpoint's export with "
                       "PTQ of its float model; this is a float checkpoint (already PTQ)")
    if "holdout" not in record or "data" not in record:
        raise QATError(f"{qat_weights}: made by an edge-yolo without a held-out split; "
                       "run edge-yolo qat again to compare it with PTQ")
    source = Path(record["source_checkpoint"])
    if not source.is_file() or sha256_file(source) != record["source_sha256"]:
        raise QATError(f"the float checkpoint {source} is gone or changed since the QAT run; "
                       "PTQ is made from it")
    # PTQ calibrates on what the QAT run learnt from, unless --calib says otherwise
    candidate = dataclasses.replace(options, name=f".{qat_bundle.name}.ptq-candidate",
                                    force=True, max_drop=None,
                                    calib=options.calib or record["data"]["source"])
    log(f"exporting PTQ of {source} for the comparison ...")
    ptq_bundle = run_export(source, candidate)
    try:
        float_det = Detector(source, threads=options.threads)
        names = list(float_det.names)
        data = open_images(record["data"]["source"], names, split="train",
                           imgsz=float_det.imgsz[0], max_frames=record["data"]["max_frames"])
        _, held = carve(data, record["holdout"]["images"], record["holdout"]["seed"])
        seen = [collect(float_det, held, progress=False)]
        for bundle in (qat_bundle, ptq_bundle):
            det = Detector(bundle, threads=options.threads, backend=host_backend(bundle))
            seen.append(collect(det, held, progress=False))
        _, qat, ptq = measure_all(seen[0], seen, workers=options.threads)
        lo, hi = difference_interval(qat, ptq)
        ships = "qat" if qat.score >= ptq.score else "ptq"
        decision = {
            "ships": ships, "qat_fidelity": qat.score, "ptq_fidelity": ptq.score,
            "difference_ci": [lo, hi], "resolved": not lo <= 0 <= hi,
            "images": len(held), "on": f"{record['data']['source']}: the QAT run's held-out "
                                      "split",
            "why": (f"fidelity to the float model: QAT {qat.score:.2f}, PTQ {ptq.score:.2f} "
                    f"on {len(held)} held-out images (QAT - PTQ 95% CI [{lo:+.2f}, {hi:+.2f}]"
                    + (")" if not lo <= 0 <= hi else ": within noise; the higher one ships)")),
        }
        if ships == "ptq":
            replace_dir(ptq_bundle, qat_bundle)
        meta = BundleMeta.read(qat_bundle)
        meta.extra["compared_with"] = {**decision, "qat_checkpoint": str(qat_weights)}
        meta.write(qat_bundle)
    finally:
        shutil.rmtree(ptq_bundle, ignore_errors=True)
    log(f"ships: {ships.upper()}: {decision['why']}")
    return decision
