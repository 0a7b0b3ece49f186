"""``edge-yolo verify BUNDLE``: prove the device's runtime computes what the export host did.

The exporter stores a few letterboxed inputs and the raw outputs its host runtime produced for
them (``reference.npz``). This runs the same inputs through the bundle's backend here and
compares scores (sigmoid of the class logits) and DFL box distances (stride units), with
tolerances that depend on the precision: an fp16 or int8 engine built on the device (TensorRT)
or another CPU's int8 kernels legitimately differ a little from the host's numbers.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: precision -> (max |score difference|, mean |box distance difference| in stride units)
TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-3, 1e-3),
    "fp16": (0.02, 0.02),
    "int8": (0.1, 0.1),
}


@dataclass
class VerifyResult:
    """Agreement of one bundle with its stored references."""

    references: int
    score_max_abs_diff: float
    dist_mean_abs_diff: float
    score_tolerance: float
    dist_tolerance: float

    @property
    def ok(self) -> bool:
        return (
            self.score_max_abs_diff <= self.score_tolerance
            and self.dist_mean_abs_diff <= self.dist_tolerance
        )


def verify_bundle(
    bundle: str | Path,
    *,
    backend: str | None = None,
    threads: int | None = None,
    device: str | None = None,
) -> VerifyResult:
    """Run the bundle's reference inputs and compare with the outputs stored at export."""
    from .bundle import BundleError
    from .detector import Detector
    from .processing import dfl_decode, sigmoid

    det = Detector(bundle, device=device, threads=threads, backend=backend)
    meta = det.meta
    root = Path(bundle) if Path(bundle).is_dir() else Path(bundle).parent
    if not meta.references:
        raise BundleError(f"{root}: the bundle stores no reference inputs/outputs to verify")
    score_diff, dist_diff, n = [], [], 0
    for name in meta.references:
        path = root / name
        try:
            with np.load(path) as ref:
                images, want_box, want_cls = ref["images"], ref["box_dist"], ref["cls_logits"]
        except (OSError, KeyError, ValueError) as e:
            raise BundleError(f"{path}: unreadable reference file ({e})") from e
        got_box, got_cls = det.backend.infer(images.astype(np.float32))
        if got_box.shape != want_box.shape or got_cls.shape != want_cls.shape:
            raise BundleError(
                f"{path}: outputs of shape {got_box.shape}, {got_cls.shape} do not match the "
                f"references' {want_box.shape}, {want_cls.shape}"
            )
        for i in range(len(images)):
            score_diff.append(np.abs(sigmoid(got_cls[i]) - sigmoid(want_cls[i])).max())
            d = dfl_decode(got_box[i], meta.reg_max) - dfl_decode(want_box[i], meta.reg_max)
            dist_diff.append(np.abs(d).mean())
            n += 1
    score_tol, dist_tol = TOLERANCES.get(meta.precision, TOLERANCES["int8"])
    return VerifyResult(n, float(max(score_diff)), float(np.mean(dist_diff)), score_tol, dist_tol)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle directory (with edge_yolo.json and reference.npz)")
    p.add_argument("--backend", help="run on this backend instead of the one the bundle names")
    p.add_argument("--threads", type=int, help="inference threads (default: all cores)")
    p.add_argument("--device", help="runtime device, e.g. cpu, cuda, GPU (backend specific)")


def run(args: argparse.Namespace) -> int:
    from .backends import BackendError
    from .bundle import BundleError

    try:
        r = verify_bundle(
            args.bundle, backend=args.backend, threads=args.threads, device=args.device
        )
    except (FileNotFoundError, BundleError, BackendError) as e:
        print(f"edge-yolo verify: {e}", file=sys.stderr)
        return 2
    verdict = "PASS" if r.ok else "FAIL"
    print(
        f"{verdict} {args.bundle}: {r.references} reference inputs; score max |diff| "
        f"{r.score_max_abs_diff:.2e} (tolerance {r.score_tolerance:g}), box distance mean "
        f"|diff| {r.dist_mean_abs_diff:.2e} strides (tolerance {r.dist_tolerance:g})"
    )
    return 0 if r.ok else 1
