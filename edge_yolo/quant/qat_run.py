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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import refuse_unknown_keys
from .qat import SCHEMES, VARIANTS, QATError

#: How QAT differs from training from scratch: a short, low-LR fine-tune of a trained model
#: with the quantizers in place, on the deployed image distribution (no mosaic, no warmup).
QAT_DEFAULTS: dict[str, Any] = {
    "epochs": 3,
    "batch": 16,
    # 1 % of training's: the weights only adapt to the grid. Measured on the demo model
    # (jetson scheme, 2 epochs): lr 1e-3 lost 1.7 mAP50-95 points against PTQ, 1e-4 none
    "lr0": 1e-4,
    "lrf": 0.1,
    "warmup_epochs": 0.0,
    "warmup_min_iters": 0,
    "close_mosaic": 1000,  # mosaic off throughout (more than any QAT run's epochs)
    "ema_tau": 100.0,  # a short run: the EMA must follow within it
    "augment": {"mixup": 0.0},
    "out": "runs/qat",
}


@dataclass
class QATConfig:
    """The ``qat:`` section of a QAT recipe."""

    variant: str = "pgi"  # pgi | distill | task (see edge_yolo.quant.qat)
    distill_weight: float = 1.0  # weight of the distillation term (variant distill)
    calib_size: int = 300  # images that initialise the quantizer ranges
    calib_split: str = "train"
    ignored_scope: list[str] = dataclasses.field(default_factory=list)  # blocks kept in float

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise QATError(f"qat variant must be one of {', '.join(VARIANTS)}, got "
                           f"{self.variant!r}")
        if self.distill_weight < 0:
            raise QATError("qat distill_weight must be >= 0")
        if self.calib_size < 1:
            raise QATError("qat calib_size must be >= 1")

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str) -> QATConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        refuse_unknown_keys(values, fields, f"{source}: qat", QATError)
        return cls(**values)


def load_qat_recipe(
    path: str | os.PathLike | None, overrides: dict[str, Any], qat_overrides: dict[str, Any]
) -> tuple[Any, QATConfig]:
    """The training config and the QAT config of a run: recipe, then flags (None = unset)."""
    from ..train.config import check_augment, config_from_dict, read_recipe

    values = dict(QAT_DEFAULTS)
    if path is not None:
        values.update(read_recipe(path))
    qat_values = values.pop("qat", None) or {}
    if not isinstance(qat_values, dict):
        raise QATError(f"{path}: 'qat' must be a mapping")
    qcfg = QATConfig.from_dict(
        {**qat_values, **{k: v for k, v in qat_overrides.items() if v is not None}},
        str(path or "<qat defaults>"),
    )
    merged = {**values, **{k: v for k, v in overrides.items() if v is not None}}
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
    """Quantize ``weights`` for ``target`` and fine-tune it with ``cfg``; the TrainResult."""
    import torch

    from ..fileio import sha256_file
    from ..models import load_model
    from ..train.loop import ModelSetup, train
    from .calibration import CalibrationError, CalibrationSet
    from .nncf_setup import prepare_extensions
    from .qat import distillation_loss, qat_record, quantize_model

    if target not in SCHEMES:
        raise QATError(f"no QAT scheme for target {target!r}")
    prepare_extensions(log)
    model, ckpt = load_model(weights)
    if ckpt.get("qat") is not None:
        raise QATError(f"{weights} is already a QAT checkpoint; start from the float one "
                       f"({ckpt['qat'].get('source_checkpoint')})")
    variant = qcfg.variant
    if variant == "pgi" and model.aux is None:
        raise QATError(
            f"{weights} ({model.name}) has no PGI branch, so the 'pgi' variant cannot run; "
            "use --variant distill (or task), or a yolov9-* checkpoint"
        )
    if variant != "pgi" and model.aux is not None:
        model.drop_auxiliary()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model.fuse()
    teacher = copy.deepcopy(model) if variant == "distill" else None
    if teacher is not None and teacher.aux is not None:
        teacher.drop_auxiliary()
    source = calib or cfg.data
    try:
        calibration = CalibrationSet.load(source, qcfg.calib_size, split=qcfg.calib_split)
    except CalibrationError as e:
        raise QATError(str(e)) from e
    log(f"QAT for {target} ({SCHEMES[target].description}); variant {variant}; quantizer "
        f"ranges from {len(calibration)} images of {source} [{qcfg.calib_split}]")
    quantized = quantize_model(model, calibration, cfg.imgsz, target,
                               ignored_scope=qcfg.ignored_scope)
    record = qat_record(
        model=quantized, target=target, variant=variant, source=weights,
        source_sha256=sha256_file(weights), calib=calibration,
        recipe={"path": str(recipe_path) if recipe_path else None,
                **dataclasses.asdict(qcfg)},
        ignored_scope=qcfg.ignored_scope,
    )
    if cfg.eval_interval:
        record["start"] = _score_start(quantized, cfg, log)
    extra = None if teacher is None else distillation_loss(teacher, qcfg.distill_weight)
    setup = ModelSetup(model=quantized, extra_loss=extra, checkpoint_extra={"qat": record},
                       description=_describe(record))
    return train(cfg, setup=setup)


def resume_qat(run: Path, overrides: dict[str, Any], log: Any = print) -> Any:
    """Continue a QAT run killed at any point: its own config, quantizers and teacher."""
    from ..fileio import sha256_file
    from ..models import load_model
    from ..train.config import config_from_dict
    from ..train.loop import ModelSetup, train
    from ..train.state import load_resume_point
    from .nncf_setup import prepare_extensions
    from .qat import check_record, distillation_loss

    prepare_extensions(log)
    point = load_resume_point(run)
    record = point.checkpoint.get("qat")
    if record is None:
        raise QATError(f"{point.path} is a training run, not a QAT run; resume it with "
                       "edge-yolo train --resume")
    record = check_record(record, point.path)
    values = {**point.config, **{k: v for k, v in overrides.items() if v is not None}}
    values["out"] = str(point.path.parent)
    cfg = config_from_dict(values, f"{point.path} (resumed config)")
    extra = None
    if record["variant"] == "distill":
        source = Path(record["source_checkpoint"])
        if not source.is_file() or sha256_file(source) != record["source_sha256"]:
            raise QATError(f"the distillation teacher {source} is gone or changed since the "
                           "run started; it is needed to resume this run")
        teacher, _ = load_model(source)
        if teacher.aux is not None:
            teacher.drop_auxiliary()
        extra = distillation_loss(teacher.fuse(), record["recipe"].get("distill_weight", 1.0))
    setup = ModelSetup(extra_loss=extra, checkpoint_extra={"qat": record})
    return train(cfg, resume=point, setup=setup)


def _score_start(model: Any, cfg: Any, log: Any) -> dict[str, float]:
    """mAP of the quantized model before fine-tuning (= PTQ in torch): what QAT starts from."""
    from ..data import FirstN, load_dataset, spec_kwargs
    from ..eval import evaluate_model

    val_data = cfg.val_data or cfg.data
    val = load_dataset(val_data, split="val", **spec_kwargs(val_data, cfg.imgsz))
    if cfg.eval_max_images:
        val = FirstN(val, cfg.eval_max_images)
    result = evaluate_model(model, val, imgsz=cfg.imgsz, progress=False)
    log(f"before fine-tuning (fake-quant PTQ): mAP50-95 {result.map50_95:.4f} "
        f"mAP50 {result.map50:.4f}")
    return {"map50_95": float(result.map50_95), "map50": float(result.map50)}


def _describe(record: dict[str, Any]) -> str:
    q = record["quantizers"]
    return (f"quantized for {record['target']}: {q['weight_quantizers']} weight and "
            f"{q['activation_quantizers']} activation quantizers "
            f"({q['asymmetric_activations']} asymmetric, {q['unsigned_activations']} unsigned); "
            f"fine-tuning variant {record['variant']}")
