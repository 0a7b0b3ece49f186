"""Output agreement, and ``edge-yolo verify BUNDLE``: does this runtime compute what the host did?

:func:`compare_outputs` is the one measure of how far two sets of raw outputs are apart:
scores (sigmoid of the class logits), DFL box distances (stride units) and whether the best
class agrees where the reference is confident. The exporter uses it to record the artifact's
agreement with the float model; ``verify`` uses it to compare the bundle's backend here with
the outputs the exporter stored (``reference.npz``), with tolerances that depend on the
precision: an fp16 or int8 engine built on the device (TensorRT) or another CPU's int8
kernels legitimately differ a little from the host's numbers.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cli_args import positive_int
from .processing import dfl_decode, sigmoid

#: an anchor the float model scores at least this high is one a user would see (the
#: detector's default confidence): agreement is measured there
CONFIDENT = 0.25

#: precision -> (max |score difference|, mean |box distance difference| in stride units)
TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-3, 1e-3),
    "fp16": (0.02, 0.02),
    "bf16": (0.05, 0.05),  # bf16 keeps 8 bits of mantissa; another CPU may round otherwise
    "int8": (0.1, 0.1),
}


def compare_outputs(
    box: np.ndarray,
    cls: np.ndarray,
    ref_box: np.ndarray,
    ref_cls: np.ndarray,
    reg_max: int,
) -> dict[str, float]:
    """Agreement of raw outputs ``(B, 4*reg_max, A)``, ``(B, nc, A)`` with reference ones.

    ``score_*``: |sigmoid difference| over every anchor and class; ``dist_*``: |DFL expected
    distance difference| in stride units over every anchor and side. Where the reference is
    confident (an anchor it scores at >= :data:`CONFIDENT`, what a user would see; counted in
    ``confident_anchors``): ``top_class_agreement``, the share whose best class is the same,
    and ``score_mean_abs_diff_confident`` / ``dist_mean_abs_diff_confident``, the same
    differences there. A reference that is confident nowhere (an under-trained model, images
    of other things) leaves these None: nothing was compared that a user would see.
    """
    if box.shape != ref_box.shape or cls.shape != ref_cls.shape:
        raise ValueError(
            f"outputs of shape {box.shape}, {cls.shape} do not match the reference's "
            f"{ref_box.shape}, {ref_cls.shape}"
        )
    score_diff = np.abs(sigmoid(cls.astype(np.float32)) - sigmoid(ref_cls.astype(np.float32)))
    dist_diff, agree, conf_score, conf_dist = [], [], [], []
    for i in range(len(box)):
        dist = np.abs(dfl_decode(box[i], reg_max) - dfl_decode(ref_box[i], reg_max))
        dist_diff.append(dist)
        sel = sigmoid(ref_cls[i].astype(np.float32)).max(0) >= CONFIDENT
        agree.append(cls[i][:, sel].argmax(0) == ref_cls[i][:, sel].argmax(0))
        conf_score.append(score_diff[i][:, sel].ravel())
        conf_dist.append(dist[sel].ravel())  # (K, 4) distances
    dist = np.concatenate([d.ravel() for d in dist_diff])
    confident = int(sum(len(a) for a in agree))

    def mean(parts: list[np.ndarray]) -> float | None:
        return float(np.concatenate(parts).mean()) if confident else None

    return {
        "score_mean_abs_diff": float(score_diff.mean()),
        "score_max_abs_diff": float(score_diff.max()),
        "dist_mean_abs_diff": float(dist.mean()),
        "dist_max_abs_diff": float(dist.max()),
        "confident_anchors": confident,
        "top_class_agreement": mean(agree),
        "score_mean_abs_diff_confident": mean(conf_score),
        "dist_mean_abs_diff_confident": mean(conf_dist),
    }


def agreement_text(acc: dict) -> str:
    """One line on how far an artifact computes what the float model does, for the export
    summary, the bundle's README and ``info``; says so when nothing confident was compared."""
    where = f"on {acc['images']} images ({acc.get('image_source', 'stored references')})"
    if acc.get("top_class_agreement") is None:
        return (f"not measured where it matters: the float model scores no anchor >= "
                f"{CONFIDENT:g} {where} (mean |score diff| over all anchors "
                f"{acc['score_mean_abs_diff']:.1e})")
    return (f"top class {acc['top_class_agreement']:.1%} and mean |score diff| "
            f"{acc['score_mean_abs_diff_confident']:.1e} over the {acc['confident_anchors']} "
            f"anchors the float model scores >= {CONFIDENT:g}, box "
            f"{acc['dist_mean_abs_diff_confident']:.1e} strides, {where}")


@dataclass
class VerifyResult:
    """Agreement of one bundle with its stored references."""

    references: int
    score_max_abs_diff: float
    dist_mean_abs_diff: float
    score_tolerance: float
    dist_tolerance: float
    caveat: str | None = None  # what the backend warned about this machine (e.g. no VNNI)

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
    check_files: bool = True,
) -> VerifyResult:
    """Run the bundle's reference inputs and compare with the outputs stored at export."""
    from .bundle import META_FILE, BundleError, inside
    from .detector import Detector

    det = Detector(
        bundle, device=device, threads=threads, backend=backend, check_files=check_files
    )
    meta = det.meta
    root = Path(bundle) if Path(bundle).is_dir() else Path(bundle).parent
    if not meta.references:
        raise BundleError(f"{root}: the bundle stores no reference inputs/outputs to verify")
    got, want = [], []
    for name in meta.references:
        path = inside(root, name, str(root / META_FILE), "references")
        try:
            with np.load(path) as ref:
                images, want_box, want_cls = ref["images"], ref["box_dist"], ref["cls_logits"]
        except (OSError, KeyError, ValueError) as e:
            raise BundleError(f"{path}: unreadable reference file ({e})") from e
        got.append(det.backend.infer(images.astype(np.float32)))
        want.append((want_box, want_cls))
    try:
        agreement = compare_outputs(
            *(np.concatenate([g[k] for g in got]) for k in (0, 1)),
            *(np.concatenate([w[k] for w in want]) for k in (0, 1)),
            meta.reg_max,
        )
    except ValueError as e:
        raise BundleError(f"{root}: {e}") from e
    score_tol, dist_tol = TOLERANCES.get(meta.precision, TOLERANCES["int8"])
    n = sum(len(w[0]) for w in want)
    return VerifyResult(
        n, agreement["score_max_abs_diff"], agreement["dist_mean_abs_diff"], score_tol, dist_tol,
        det.backend.caveat,
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle directory (with edge_yolo.json and reference.npz)")
    p.add_argument("--backend", help="run on this backend instead of the one the bundle names")
    p.add_argument("--threads", type=positive_int, help="inference threads (default: all cores)")
    p.add_argument("--device", help="runtime device, e.g. cpu, cuda, GPU (backend specific)")
    p.add_argument("--no-check-files", dest="check_files", action="store_false",
                   help="skip the bundle's file checksums (storage verified another way)")


def run(args: argparse.Namespace) -> int:
    given = ("backend", "threads", "device", "check_files")
    r = verify_bundle(args.bundle, **{k: getattr(args, k) for k in given})
    verdict = "PASS" if r.ok else "FAIL"
    print(
        f"{verdict} {args.bundle}: {r.references} reference inputs; score max |diff| "
        f"{r.score_max_abs_diff:.2e} (tolerance {r.score_tolerance:g}), box distance mean "
        f"|diff| {r.dist_mean_abs_diff:.2e} strides (tolerance {r.dist_tolerance:g})"
    )
    if r.caveat:
        print(f"  why it may differ: {r.caveat}")
    return 0 if r.ok else 1
