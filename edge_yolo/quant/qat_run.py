"""A QAT run: quantize a trained checkpoint for one target, fine-tune it through the training
loop, and leave a self-describing QAT checkpoint that ``edge-yolo export`` packages.

Settings come like training's, in layers: the training defaults, :data:`QAT_DEFAULTS` (what a
fine-tune of a trained model changes), a recipe file (``recipes/qat-*.yaml``: training keys
plus a ``qat:`` section read by :class:`QATConfig`), then command-line flags. A run
directory holds ``last.pt`` / ``best.pt`` (EMA weights with their quantizers); a run killed
at any point continues with ``--resume RUN``, like training.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import refuse_unknown_keys
from .qat import SCHEMES, VARIANTS, QATError

#: Optimizer updates a QAT run makes when none are asked for (see QATConfig.updates)
DEFAULT_UPDATES = 300

#: How QAT differs from training from scratch: a low-LR fine-tune of a trained model with the
#: quantizers in place, on the deployed image distribution (no mosaic, no warmup), counted in
#: optimizer updates (the epochs follow from the data's size), every batch a step.
QAT_DEFAULTS: dict[str, Any] = {
    "batch": 16,
    "lr0": 1e-4,  # the weights only adapt to the grid
    "lrf": 0.1,
    "warmup_epochs": 0.0,
    "warmup_min_iters": 0,
    "close_mosaic": 1_000_000,  # mosaic off throughout (more than any QAT run's epochs)
    "ema_tau": 100.0,  # the EMA must follow within a few hundred updates
    # no evaluation on the val split: choosing on it would flatter QAT against PTQ, which the
    # report scores on that split. A run scores itself on a split carved from its own data
    "eval_interval": 0,
    "augment": {"mixup": 0.0},
    "out": "runs/qat",
}

#: training keys a QAT recipe may not set: the schedule is ``qat.updates`` and accumulation
#: ``qat.accumulate``; evaluation is on the held-out split
NOT_IN_QAT = {"epochs": "qat.updates", "max_updates": "qat.updates", "nbs": "qat.accumulate",
              "eval_interval": "qat.holdout"}


@dataclass
class QATConfig:
    """The ``qat:`` section of a QAT recipe."""

    #: pgi | distill | task (see edge_yolo.quant.qat); None: pgi for a model with a PGI
    #: branch, else task, and distill (the only one) on images without labels
    variant: str | None = None
    updates: int = DEFAULT_UPDATES  # optimizer updates: the schedule's length
    accumulate: int = 1  # batches per update (1: every batch steps)
    distill_weight: float = 1.0  # weight of the distillation term beside the task loss
    calib_size: int | None = None  # images that initialise the ranges; None: up to 300
    calib_split: str = "train"
    #: images carved from the training data (never trained on) where the run scores its
    #: start (quantizers initialised, 0 updates) and its end; None: 10 %, 1 to 200
    holdout: int | None = None
    max_frames: int = 1000  # frames sampled from a video given as the data
    ignored_scope: list[str] = dataclasses.field(default_factory=list)  # blocks kept in float

    def __post_init__(self) -> None:
        if self.variant is not None and self.variant not in VARIANTS:
            raise QATError(f"qat variant must be one of {', '.join(VARIANTS)}, got "
                           f"{self.variant!r}")
        checks = [
            (self.distill_weight >= 0, "distill_weight must be >= 0"),
            (self.calib_size is None or self.calib_size >= 1, "calib_size must be >= 1"),
            (self.updates >= 1, "updates must be >= 1"),
            (self.accumulate >= 1, "accumulate must be >= 1"),
            (self.holdout is None or self.holdout >= 1, "holdout must be >= 1"),
            (self.max_frames >= 1, "max_frames must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise QATError(f"qat {message}")

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str) -> QATConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        refuse_unknown_keys(values, fields, f"{source}: qat", QATError)
        return cls(**values)


def default_holdout(n: int) -> int:
    """Images held out of ``n`` when not asked: 10 %, at least 1, at most 200."""
    return max(1, min(200, round(0.1 * n)))


def load_qat_recipe(
    path: str | os.PathLike | None, overrides: dict[str, Any], qat_overrides: dict[str, Any]
) -> tuple[Any, QATConfig]:
    """The training config and the QAT config of a run: recipe, then flags (None = unset)."""
    from ..train.config import check_augment, config_from_dict, read_recipe

    values = dict(QAT_DEFAULTS)
    if path is not None:
        recipe = read_recipe(path)
        for key, instead in NOT_IN_QAT.items():
            if key in recipe:
                raise QATError(f"{path}: '{key}' is not a QAT setting; QAT is counted in "
                               f"optimizer updates: set {instead}")
        values.update(recipe)
    qat_values = values.pop("qat", None) or {}
    if not isinstance(qat_values, dict):
        raise QATError(f"{path}: 'qat' must be a mapping")
    qcfg = QATConfig.from_dict(
        {**qat_values, **{k: v for k, v in qat_overrides.items() if v is not None}},
        str(path or "<qat defaults>"),
    )
    merged = {**values, **{k: v for k, v in overrides.items() if v is not None}}
    merged["nbs"] = merged.get("batch", 64) * qcfg.accumulate  # no accumulation unless asked
    merged["max_updates"] = qcfg.updates
    source = f"{path or '<qat defaults>'} + command line"
    cfg = config_from_dict(merged, source)
    check_augment(cfg.augment, source)
    return cfg, qcfg


def run_qat(
    weights: Path,
    target: str,
    cfg: Any,
    qcfg: QATConfig,
    *,
    calib: str | None = None,
    recipe_path: Path | None = None,
    log: Any = print,
) -> Any:
    """Quantize ``weights`` for ``target`` and fine-tune it with ``cfg``; the TrainResult.

    ``cfg.data`` may be a labeled dataset or plain images (a folder, a video), which only the
    ``distill`` variant can learn from. A held-out split is carved from it first; the run
    scores its start there (``init.pt``: quantizers initialised, 0 updates) and its end.
    """
    import torch

    from ..fileio import sha256_file
    from ..models import load_model
    from ..train.loop import train
    from .nncf_setup import prepare_extensions
    from .qat import qat_record, quantize_model

    if target not in SCHEMES:
        raise QATError(f"no QAT scheme for target {target!r}")
    prepare_extensions(log)
    model, ckpt = load_model(weights)
    if ckpt.get("qat") is not None:
        raise QATError(f"{weights} is already a QAT checkpoint; start from the float one "
                       f"({ckpt['qat'].get('source_checkpoint')})")
    names = list(ckpt["names"])
    data, labeled = _open_data(cfg.data, names, cfg.imgsz, qcfg.max_frames)
    variant = resolve_variant(qcfg.variant, labeled, model.aux is not None, weights, cfg.data)
    n_held = qcfg.holdout or default_holdout(len(data))
    train_part, held = _carve(data, n_held, cfg.seed)
    if variant != "pgi" and model.aux is not None:
        model.drop_auxiliary()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model.fuse()
    reference = copy.deepcopy(model)  # the float model: teacher, and what fidelity measures to
    if reference.aux is not None:
        reference.drop_auxiliary()
    calibration = _calibration(calib, train_part, qcfg, cfg.seed)
    steps = _steps_per_epoch(len(train_part), cfg.batch, qcfg.accumulate)
    cfg.epochs = math.ceil(qcfg.updates / steps)
    log(f"QAT for {target} ({SCHEMES[target].description}); variant {variant}"
        f"{'' if labeled else ' (no labels: distillation from the float model alone)'}; "
        f"{qcfg.updates} optimizer updates ({steps} an epoch over {len(train_part)} images, "
        f"{n_held} held out); quantizer ranges from {len(calibration)} images of "
        f"{calibration.source}")
    quantized = quantize_model(model, calibration, cfg.imgsz, target,
                               ignored_scope=qcfg.ignored_scope)
    record = qat_record(
        model=quantized, target=target, variant=variant, source=weights,
        source_sha256=sha256_file(weights), calib=calibration,
        recipe={"path": str(recipe_path) if recipe_path else None,
                **dataclasses.asdict(qcfg), "variant": variant},
        ignored_scope=qcfg.ignored_scope,
    )
    record["data"] = {"source": str(cfg.data), "labeled": labeled, "images": len(data),
                      "max_frames": qcfg.max_frames}
    record["schedule"] = {"updates": qcfg.updates, "accumulate": qcfg.accumulate,
                          "steps_per_epoch": steps, "batch": cfg.batch}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    base = _collect(reference, held, cfg.imgsz, names)
    record["holdout"] = {"images": n_held, "seed": cfg.seed,
                         "init": holdout_scores(quantized, held, base, cfg.imgsz, names)}
    record["init_checkpoint"] = INIT_NAME
    _save_init(out / INIT_NAME, quantized, record, cfg, names)
    log(f"start (quantizers initialised, 0 updates) on {n_held} held-out images: "
        f"{_scores_text(record['holdout']['init'])}")
    setup = _setup(variant, reference, qcfg.distill_weight, train_part, record)
    setup.model, setup.description = quantized, _describe(record)
    result = train(cfg, setup=setup)
    return _finish(result, record, base, held, cfg, names, log)


def resume_qat(run: Path, overrides: dict[str, Any], log: Any = print) -> Any:
    """Continue a QAT run killed at any point: its own config, data split, quantizers and
    teacher; ``overrides["updates"]`` may extend its schedule."""
    from ..fileio import sha256_file
    from ..models import load_model
    from ..train.config import config_from_dict
    from ..train.loop import train
    from ..train.state import load_resume_point
    from .nncf_setup import prepare_extensions
    from .qat import check_record

    prepare_extensions(log)
    point = load_resume_point(run)
    record = point.checkpoint.get("qat")
    if record is None:
        raise QATError(f"{point.path} is a training run, not a QAT run; resume it with "
                       "edge-yolo train --resume")
    record = check_record(record, point.path)
    updates = overrides.pop("updates", None)
    values = {**point.config, **{k: v for k, v in overrides.items() if v is not None}}
    values["out"] = str(point.path.parent)
    if updates is not None:
        values["max_updates"] = updates
        values["epochs"] = math.ceil(updates / record["schedule"]["steps_per_epoch"])
        record["schedule"]["updates"] = updates
    cfg = config_from_dict(values, f"{point.path} (resumed config)")
    names = list(point.checkpoint["names"])
    data, _ = _open_data(record["data"]["source"], names, cfg.imgsz,
                         record["data"]["max_frames"])
    train_part, held = _carve(data, record["holdout"]["images"], record["holdout"]["seed"])
    source = Path(record["source_checkpoint"])
    if not source.is_file() or sha256_file(source) != record["source_sha256"]:
        raise QATError(f"the float checkpoint {source} is gone or changed since the run "
                       "started; it is the teacher and the reference this run is scored "
                       "against, needed to resume it")
    reference, _ = load_model(source)
    if reference.aux is not None:
        reference.drop_auxiliary()
    reference.fuse()
    made = int(point.train["ema_updates"])
    if cfg.max_updates and made >= cfg.max_updates and not _scored(point.path.parent):
        # killed while scoring its end: the updates are all made, only the scoring is left
        from ..train.loop import TrainResult

        out = point.path.parent
        result = TrainResult(out, out / "last.pt", out / "best.pt", point.epoch, None,
                             updates=made)
    else:
        setup = _setup(record["variant"], reference,
                       record["recipe"].get("distill_weight", 1.0), train_part, record)
        result = train(cfg, resume=point, setup=setup)
    base = _collect(reference, held, cfg.imgsz, names)
    return _finish(result, record, base, held, cfg, names, log)


#: the run's starting point beside last.pt / best.pt: quantizers initialised, no update made
INIT_NAME = "init.pt"


def _scored(run: Path) -> bool:
    """Whether a run's end was scored (its best.pt records it): the run is complete."""
    from ..models.checkpoint import CheckpointError, load_checkpoint

    try:
        record = load_checkpoint(run / "best.pt").get("qat") or {}
    except CheckpointError:
        return False
    return "end" in (record.get("holdout") or {})


def resolve_variant(variant: str | None, labeled: bool, has_pgi: bool, weights: Path,
                    data: str) -> str:
    """The variant a run uses: the one asked for if it can run on this model and data."""
    if not labeled:
        if variant not in (None, "distill"):
            raise QATError(f"{data} has no labels, so the {variant!r} variant (which learns "
                           "from labels) cannot run; use --variant distill, or labeled data")
        return "distill"
    if variant is None:
        return "pgi" if has_pgi else "task"
    if variant == "pgi" and not has_pgi:
        raise QATError(f"{weights} has no PGI branch, so the 'pgi' variant cannot run; use "
                       "--variant distill (or task), or a yolov9-* checkpoint")
    return variant


def _open_data(spec: str, names: list[str], imgsz: int, max_frames: int) -> tuple[Any, bool]:
    from ..data import DatasetError
    from ..data.unlabeled import is_labeled, open_images

    try:
        data = open_images(spec, names, split="train", imgsz=imgsz, max_frames=max_frames)
    except DatasetError as e:
        raise QATError(f"QAT data: {e}") from None
    return data, is_labeled(data)


def _carve(data: Any, n: int, seed: int) -> tuple[Any, Any]:
    from ..data import DatasetError
    from ..data.unlabeled import carve

    try:
        return carve(data, n, seed)
    except DatasetError as e:
        raise QATError(f"QAT held-out split: {e}") from None


def _steps_per_epoch(images: int, batch: int, accumulate: int) -> int:
    """Optimizer updates an epoch makes: the loop steps every ``accumulate`` batches and on
    an epoch's last batch."""
    return math.ceil(math.ceil(images / batch) / accumulate)


def _calibration(calib: str | None, train_part: Any, qcfg: QATConfig, seed: int) -> Any:
    """The images that initialise the ranges: ``calib`` if given, else the training part
    (never the held-out images: they score the run)."""
    from .calibration import CalibrationError, CalibrationSet

    try:
        if calib is not None:
            return CalibrationSet.load(calib, qcfg.calib_size, split=qcfg.calib_split)
        return CalibrationSet.from_dataset(train_part, qcfg.calib_size, seed=seed,
                                           source=str(train_part.dataset.source),
                                           split="train, held-out images excluded")
    except CalibrationError as e:
        raise QATError(str(e)) from e


def _setup(variant: str, reference: Any, distill_weight: float, train_part: Any,
           record: dict[str, Any]) -> Any:
    """The training loop's seam for this variant: its images and its loss."""
    from ..data.unlabeled import is_labeled
    from ..train.loop import ModelSetup
    from .qat import distillation_loss, distillation_only

    setup = ModelSetup(checkpoint_extra={"qat": record}, train_set=train_part)
    if variant == "distill":
        if is_labeled(train_part):
            setup.extra_loss = distillation_loss(reference, distill_weight)
        else:
            setup.loss = distillation_only(reference)
    return setup


def _collect(model: Any, images: Any, imgsz: int, names: list[str]) -> Any:
    """Detections of a torch model on ``images`` through the one evaluation path."""
    from ..eval.val import collect
    from ..runtime.detector import Detector

    detector = Detector.from_model(model, imgsz=imgsz, names=names)
    return collect(detector, images, progress=False)


#: bootstrap resamples of the held-out scores (the same ones at the start and the end: the
#: change fine-tuning made gets a paired interval)
HOLDOUT_RESAMPLES = 100


def holdout_scores(model: Any, held: Any, base: Any, imgsz: int, names: list[str],
                   resamples: int = HOLDOUT_RESAMPLES) -> dict[str, Any]:
    """A quantized model on the held-out split: fidelity to the float model (``base``: its
    detections there), with its interval, and ground-truth mAP where there are labels."""
    from ..data.unlabeled import is_labeled
    from ..eval.fidelity import FidelityScorer

    got = _collect(model, held, imgsz, names)
    fid = FidelityScorer(base).measure(got, resamples)
    out: dict[str, Any] = {"fidelity": fid.score, "fidelity_ci": list(fid.ci),
                           "reference_boxes": fid.reference_boxes,
                           "fidelity_resampled": fid.resampled}
    if is_labeled(held):
        result = got.evaluate()
        out.update(map50_95=float(result.map50_95), map50=float(result.map50),
                   float_map50_95=float(base.evaluate().map50_95))
    return out


def _scores_text(scores: dict[str, Any]) -> str:
    lo, hi = scores["fidelity_ci"]
    text = f"fidelity {scores['fidelity']:.2f} [{lo:+.2f}, {hi:+.2f}]"
    if "map50_95" in scores:
        text += (f", mAP50-95 {100 * scores['map50_95']:.2f} (float "
                 f"{100 * scores['float_map50_95']:.2f})")
    return text


def _save_init(path: Path, model: Any, record: dict[str, Any], cfg: Any,
               names: list[str]) -> None:
    """``init.pt``: the quantized model before any update, a QAT checkpoint of its own
    (the report's "QAT init" row)."""
    from ..models.checkpoint import atomic_torch_save, checkpoint_dict

    init = {**record, "stage": "init", "updates": 0}
    atomic_torch_save(checkpoint_dict(model, names=names, imgsz=cfg.imgsz, qat=init,
                                      train_config=cfg.to_dict()), path)


def _finish(result: Any, record: dict[str, Any], base: Any, held: Any, cfg: Any,
            names: list[str], log: Any) -> Any:
    """Score the end on the held-out split; record it with the update count in best.pt and
    ``qat.json``, and say what fine-tuning added."""
    import json

    from ..eval.fidelity import Fidelity, difference_interval
    from ..fileio import atomic_write_text
    from ..models import load_model
    from ..models.checkpoint import atomic_torch_save, load_checkpoint

    model, _ = load_model(result.best)
    held_out = record["holdout"]
    held_out["end"] = holdout_scores(model, held, base, cfg.imgsz, names)
    init, end = held_out["init"], held_out["end"]
    pair = [Fidelity(x["fidelity"], tuple(x["fidelity_ci"]), len(held), x["reference_boxes"],
                     x["fidelity_resampled"]) for x in (end, init)]
    held_out["fidelity_gain"] = end["fidelity"] - init["fidelity"]
    held_out["fidelity_gain_ci"] = list(difference_interval(*pair))
    record["updates"] = result.updates
    ckpt = load_checkpoint(result.best)
    ckpt["qat"] = record
    atomic_torch_save(ckpt, result.best)
    summary = {"target": record["target"], "variant": record["variant"],
               "updates": result.updates, "schedule": record["schedule"],
               "data": record["data"], "holdout": record["holdout"]}
    atomic_write_text(Path(cfg.out) / "qat.json", json.dumps(summary, indent=1) + "\n")
    lo, hi = held_out["fidelity_gain_ci"]
    log(f"{result.updates} optimizer updates; on {held_out['images']} held-out images: start "
        f"{_scores_text(init)}; end {_scores_text(end)}; fine-tuning changed fidelity by "
        f"{held_out['fidelity_gain']:+.2f} (paired 95% CI [{lo:+.2f}, {hi:+.2f}])")
    if hi < 0:
        log("WARNING: fine-tuning moved the model further from the float one than its start "
            "(PTQ in torch); try a lower --lr or --variant distill, and export with "
            "--compare-ptq so the closer of QAT and PTQ ships")
    return result


def _describe(record: dict[str, Any]) -> str:
    q = record["quantizers"]
    return (f"quantized for {record['target']}: {q['weight_quantizers']} weight and "
            f"{q['activation_quantizers']} activation quantizers "
            f"({q['asymmetric_activations']} asymmetric, {q['unsigned_activations']} unsigned); "
            f"fine-tuning variant {record['variant']}")
