"""The training loop, top to bottom: setup, epochs of accumulated SGD steps, evaluation of
the EMA, checkpoints. One function, :func:`train`, runs single-process or under torchrun.

Reading order: distributed/device setup -> data -> model (+ initial weights / resume) ->
optimizer, LR schedule, AMP -> the epoch loop (warmup, forward, loss, backward, step, EMA)
-> per-epoch evaluation, ``last.pt``/``best.pt``, results.csv/json and plots -> the final
"drop the PGI branch and evaluate ``best.pt``" check that the deployed network is scored by.

Reproducibility: every epoch reseeds torch, numpy and python from (seed, rank, epoch) and
the data loader orders and augments an epoch from (seed, epoch). So an epoch's randomness
is a function of its number alone, and a resumed run (which also restores the saved RNG
states) repeats the uninterrupted one. Gradients are never carried across an epoch
boundary (the last micro-batches of an epoch always step), which keeps checkpoints exact.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_yolo.errors import EdgeYoloError, first_line, option
from edge_yolo.models import create_model
from edge_yolo.models.checkpoint import (
    atomic_torch_save,
    model_from_checkpoint,
    without_training_state,
)
from edge_yolo.models.gelan import YOLO

from .config import TrainConfig, augment_config
from .cpu_share import CPUShare, fit_threads, loader_workers
from .distributed import DistInfo, all_reduce_mean, barrier, cleanup, init_distributed
from .ema import ModelEMA, unwrap
from .optim import (
    amp_dtype,
    apply_warmup,
    build_optimizer,
    dtype_name,
    fit_warmup,
    lr_lambda,
    warmup_iters,
)
from .results import LOSS_NAMES, epoch_line, plot_results, read_history, write_results
from .state import ResumePoint, save_training_checkpoint, seed_everything, set_rng_state

StepCallback = Callable[[int, YOLO], None]


class TrainError(EdgeYoloError, ValueError):
    """A run that cannot start or continue as configured; the message says why."""


@dataclass
class TrainResult:
    """Where a run left its files, and how it scored."""

    out: Path
    last: Path
    best: Path
    epochs_completed: int
    best_fitness: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None  # best.pt without the PGI branch, fused, evaluated
    updates: int = 0  # optimizer updates made, resumed parts included


@dataclass
class ModelSetup:
    """A model the caller prepared, and what the loop adds for it: the seam QAT trains through.

    The loop trains ``model`` exactly as a model it built itself (same data, loss, optimizer,
    EMA, evaluation, checkpoints) and never needs to know how it was made. ``extra_loss(images,
    outputs)`` is added to the task loss (e.g. distillation from a float teacher).
    ``checkpoint_extra`` goes into every checkpoint, so a resumed run and every reader of
    ``best.pt`` rebuild the same model (for QAT: the quantizer setup, see
    :func:`edge_yolo.models.checkpoint.model_from_checkpoint`). ``model`` is None on resume:
    the checkpoint rebuilds it.
    """

    model: YOLO | None = None
    extra_loss: Callable[[torch.Tensor, Any], torch.Tensor] | None = None
    checkpoint_extra: dict[str, Any] = field(default_factory=dict)
    description: str = ""  # one line for the log: what the model is
    train_set: Any = None  # what to train on (QAT's, held-out images carved away); None: cfg.data
    #: replaces the task loss, ``(images, outputs) -> (loss, 3 logged parts)``: no labels
    loss: Callable[[torch.Tensor, Any], tuple[torch.Tensor, torch.Tensor]] | None = None


class TrainForward(nn.Module):
    """Calls ``forward_train``, so DDP's gradient hooks see the pass the loss uses."""

    def __init__(self, model: YOLO) -> None:
        super().__init__()
        self.module = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.module.forward_train(x)


def fitness(map50_95: float, map50: float) -> float:
    """Model selection score: mostly mAP50-95, a little mAP50 (the reference's weighting)."""
    return 0.9 * map50_95 + 0.1 * map50


def train(
    cfg: TrainConfig,
    *,
    resume: ResumePoint | None = None,
    on_step: StepCallback | None = None,
    setup: ModelSetup | None = None,
) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data``; with ``resume``, continue that run exactly.

    ``on_step(updates, model)`` is called after every optimizer step with the raw model.
    ``setup``: train a model the caller prepared (see :class:`ModelSetup`).
    Under torchrun every rank calls this; rank 0 alone writes files and evaluates.
    """
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    info = init_distributed(cfg.device)
    try:
        return _train(cfg, info, resume, on_step, setup or ModelSetup())
    finally:
        if owns_group:
            cleanup()


def _train(
    cfg: TrainConfig,
    info: DistInfo,
    resume: ResumePoint | None,
    on_step: StepCallback | None,
    setup: ModelSetup,
) -> TrainResult:
    from edge_yolo.data import FirstN, load_dataset, spec_kwargs
    from edge_yolo.data.dataset import check_trainable
    from edge_yolo.data.loader import DetectionLoader

    from .loss import LossGains, build_loss

    device, rank, world = info.device, info.rank, info.world_size
    log = print if info.is_main else _quiet
    if cfg.batch % world:
        raise TrainError(f"batch {cfg.batch} is not divisible by the {world} processes")
    if cfg.sync_bn and info.distributed and device.type != "cuda":
        # torch's SyncBatchNorm has no CPU kernel; without it each rank normalises its own share
        raise TrainError(f"{option('sync_bn')} needs CUDA devices (torch has no CPU SyncBatchNorm)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # CPU, one process, threads not fixed: one thread per core that other processes leave free
    share = CPUShare() if device.type == "cpu" and world == 1 and not cfg.threads else None
    most = torch.get_num_threads()  # torch's own choice (physical cores, or OMP_NUM_THREADS)
    if share is not None:
        time.sleep(0.3)  # a first reading of what the other processes use
        fit_threads(share, most, log)
    seed_everything(cfg.seed + rank, cfg.deterministic)
    out = Path(cfg.out)
    last_path, best_path = out / "last.pt", out / "best.pt"
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)

    # ---- data -------------------------------------------------------------------------
    train_set = setup.train_set  # a dataset's truth would be its len(): compared to None
    if train_set is None:
        train_set = load_dataset(cfg.data, split="train", **spec_kwargs(cfg.data, cfg.imgsz))
    names = list(train_set.names)
    num_classes = cfg.num_classes or len(names)
    if num_classes != len(names):
        raise TrainError(f"{cfg.data}: {len(names)} class names but num_classes={num_classes}")
    if setup.loss is None:  # labels are learnt from: refuse a set without any, before work
        warning = check_trainable(train_set)
        if warning and info.is_main:
            log(warning)
    val_set = None
    if cfg.eval_interval and info.is_main:
        val_data = cfg.val_data or cfg.data
        val_set = load_dataset(val_data, split="val", **spec_kwargs(val_data, cfg.imgsz))
        if cfg.eval_max_images:
            val_set = FirstN(val_set, cfg.eval_max_images)
    if info.is_main and train_set.report:  # truthy when bad data was found and skipped
        log(str(train_set.report))
    batch = cfg.batch // world  # per process
    workers = loader_workers(cfg.workers, device.type, world)
    loader = DetectionLoader(
        train_set,
        cfg.imgsz,
        batch,
        augment=True,
        hyp=augment_config({**cfg.augment, "close_mosaic": cfg.close_mosaic}),
        shuffle=True,
        workers=workers,
        seed=cfg.seed,
        rank=rank,
        world_size=world,
        drop_last=world > 1,  # equal step counts on every rank, or DDP would hang
    )
    nb = len(loader)
    if nb == 0:
        raise TrainError(f"{cfg.data}: fewer training images than one batch of {cfg.batch}")

    # ---- model ------------------------------------------------------------------------
    if resume is not None:
        # the run's own architecture (head widths may come from pretrained weights)
        raw = {**resume.checkpoint, "state_dict": resume.train["model"]}
        model = model_from_checkpoint(raw, resume.path)
    elif setup.model is not None:
        model = setup.model
        if setup.description:
            log(setup.description)
    else:
        model = create_model(cfg.model, num_classes=num_classes)
        if cfg.weights:
            log(load_initial_weights(model, cfg.weights))
    model.to(device)
    ema = ModelEMA(model, cfg.ema_decay, cfg.ema_tau)
    if resume is not None:
        ema.load_state_dict(resume.checkpoint["state_dict"], resume.train["ema_updates"])
    if cfg.sync_bn and info.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    forward: nn.Module = TrainForward(model)
    if info.distributed:
        ids = [device.index] if device.type == "cuda" else None
        forward = nn.parallel.DistributedDataParallel(forward, device_ids=ids)
    criterion = build_loss(
        model,
        gains=LossGains(cfg.box, cfg.cls, cfg.dfl),
        label_smoothing=cfg.label_smoothing,
        aux_weight=cfg.aux_weight,
    )

    # ---- optimizer, schedule, mixed precision -----------------------------------------
    accumulate_to = max(round(cfg.nbs / cfg.batch), 1)
    weight_decay = cfg.weight_decay * cfg.batch * accumulate_to / cfg.nbs
    optimizer = build_optimizer(model, cfg.lr0, cfg.momentum, weight_decay, cfg.optimizer)
    lf = lr_lambda(cfg.epochs, cfg.lrf, cfg.cos_lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lf)
    autocast = amp_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast == torch.float16)
    n_warmup = warmup_iters(cfg.warmup_epochs, nb, cfg.warmup_min_iters)
    total_iters = cfg.epochs * nb
    if (fitted := fit_warmup(n_warmup, total_iters)) < n_warmup:
        log(f"warm-up of {n_warmup} iterations would cover {n_warmup / total_iters:.0%} of this "
            f"{total_iters}-iteration schedule: shortened to {fitted}, so the run trains at "
            "its learning rate")
        n_warmup = fitted
    start_epoch, best_fitness, history = 0, None, []
    if resume is not None:
        optimizer.load_state_dict(resume.train["optimizer"])
        scheduler.load_state_dict(resume.train["scheduler"])
        scaler.load_state_dict(resume.train["scaler"])
        start_epoch, best_fitness = resume.epoch, resume.train["best_fitness"]
        history = read_history(out / "results.json", start_epoch)
        set_rng_state(resume.train["rng"])
        log(f"resuming {resume.path} from epoch {start_epoch + 1}/{cfg.epochs}")
    if cfg.max_updates and ema.updates >= cfg.max_updates:
        raise TrainError(f"run already finished {ema.updates} of {cfg.max_updates} updates; "
                         f"raise {option('updates')}")
    if start_epoch >= cfg.epochs:
        raise TrainError(
            f"run already finished {start_epoch} of {cfg.epochs} epochs; raise {option('epochs')}"
        )
    log(
        f"{cfg.model}: {len(train_set)} train images, {len(names)} classes, {world} process(es) on "
        f"{device}, batch {cfg.batch} x accumulate {accumulate_to} (nominal {cfg.nbs}), "
        f"{nb} iterations/epoch, warmup {n_warmup} iterations, AMP {dtype_name(autocast)}, "
        f"{workers} loader worker(s)"
        + (f", stopping after {cfg.max_updates} optimizer updates" if cfg.max_updates else "")
    )

    # ---- epochs -----------------------------------------------------------------------
    epoch = start_epoch
    for epoch in range(start_epoch, cfg.epochs):
        if share is not None and epoch > start_epoch:
            fit_threads(share, most, log)  # what the others used during the last epoch
        t_epoch = time.perf_counter()
        seed_everything(cfg.seed + 1000 * rank + epoch, deterministic=False)
        model.train()
        mosaic_was_on = loader.mosaic
        loader.set_epoch(epoch, cfg.epochs)  # reshuffles; closes mosaic for the last epochs
        if mosaic_was_on and not loader.mosaic:
            log(f"epoch {epoch + 1}: mosaic off for the last {cfg.epochs - epoch} epochs")
        loss_sum = torch.zeros(3, device=device)
        pending = 0  # micro-batches whose gradients wait for the next step
        accumulate = accumulate_to
        batches = _progress(
            loader, nb, f"epoch {epoch + 1}/{cfg.epochs}", info.is_main and cfg.progress
        )
        optimizer.zero_grad(set_to_none=True)
        for i, (images, targets, _meta) in enumerate(batches):
            ni = i + nb * epoch  # iterations since the start of training
            if ni <= n_warmup and n_warmup > 0:
                apply_warmup(
                    optimizer,
                    ni,
                    n_warmup,
                    lf(epoch),
                    bias_lr=cfg.warmup_bias_lr,
                    momentum=(cfg.warmup_momentum, cfg.momentum),
                )
                # accumulate fewer batches early: small steps while the LR is small anyway
                accumulate = max(
                    1, round(float(np.interp(ni, [0, n_warmup], [1, cfg.nbs / cfg.batch])))
                )
            step_now = pending + 1 >= accumulate or i == nb - 1
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            # only the stepping micro-batch all-reduces gradients across ranks
            sync = (
                contextlib.nullcontext() if step_now or not info.distributed else forward.no_sync()
            )
            with sync:
                with torch.autocast(
                    device.type, dtype=autocast or torch.float32, enabled=autocast is not None
                ):
                    outputs = forward(images)
                if setup.loss is not None:
                    loss, items = setup.loss(images, outputs)
                else:
                    loss, items = criterion(outputs, targets)
                if setup.extra_loss is not None:
                    loss = loss + setup.extra_loss(images, outputs)
                # DDP averages gradients over ranks; the loss is a per-image sum, so scale back
                loss = loss * world
                scaler.scale(loss).backward()
            pending += 1
            if step_now:
                scaler.unscale_(optimizer)
                if cfg.clip_grad:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=cfg.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                ema.update(model)
                pending = 0
                if on_step is not None:
                    on_step(ema.updates, unwrap(model))
            if not torch.isfinite(items).all():
                raise FloatingPointError(
                    f"epoch {epoch + 1}, iteration {i}: loss is {items.tolist()}"
                )
            loss_sum += items
            if hasattr(batches, "set_postfix"):
                mean = (loss_sum / (i + 1)).tolist()
                batches.set_postfix(
                    {k: f"{v:.3f}" for k, v in zip(LOSS_NAMES, mean)}, refresh=False
                )
            if cfg.max_updates and ema.updates >= cfg.max_updates and pending == 0:
                break  # the schedule is counted in updates: the last epoch ends here
        lrs = [g["lr"] for g in optimizer.param_groups]
        scheduler.step()
        train_loss = all_reduce_mean(loss_sum / (i + 1), info).tolist()

        # ---- evaluate the EMA, save checkpoints ---------------------------------------
        final_epoch = epoch + 1 == cfg.epochs or bool(
            cfg.max_updates and ema.updates >= cfg.max_updates)
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            **{f"train/{k}_loss": v for k, v in zip(LOSS_NAMES, train_loss)},
            **{f"lr/{g['name']}": lr for g, lr in zip(optimizer.param_groups, lrs)},
            "val/map50_95": None,
            "val/map50": None,
        }
        eval_error: Exception | None = None
        if val_set is not None and ((epoch + 1) % cfg.eval_interval == 0 or final_epoch):
            from edge_yolo.eval import evaluate_model

            try:
                result = evaluate_model(
                    ema.ema,
                    val_set,
                    imgsz=cfg.imgsz,
                    batch_size=cfg.eval_batch or 2 * batch,
                    progress=cfg.progress,
                )
                row["val/map50_95"], row["val/map50"] = (
                    _nan_to_zero(result.map50_95),
                    _nan_to_zero(result.map50),
                )
                if result.skipped:
                    log(f"evaluation skipped {len(result.skipped)} images, e.g. "
                        f"{result.skipped[0]}")
            except Exception as e:  # the epoch's checkpoint is saved first, then it stops
                eval_error = e
        row["time"] = time.perf_counter() - t_epoch
        history.append(row)
        if info.is_main:
            improved = False
            if row["val/map50_95"] is not None:
                fit = fitness(row["val/map50_95"], row["val/map50"])
                improved = best_fitness is None or fit > best_fitness
                best_fitness = fit if improved else best_fitness
            ckpt = save_training_checkpoint(
                last_path,
                ema_model=ema.ema,
                model_state=unwrap(model).state_dict(),
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=scaler,
                ema_updates=ema.updates,
                epoch=epoch + 1,
                best_fitness=best_fitness,
                metrics=row,
                config=cfg.to_dict(),
                names=names,
                imgsz=cfg.imgsz,
                extra=setup.checkpoint_extra,
            )
            # without evaluation there is nothing to select on: best is the latest. best.pt
            # is what ships: no optimizer or raw weights (a third of last.pt's size)
            if improved or best_fitness is None:
                atomic_torch_save(without_training_state(ckpt), best_path)
            write_results(out, history)
            if eval_error is not None:
                raise TrainError(
                    f"evaluation after epoch {epoch + 1} failed ({first_line(eval_error)}); "
                    f"the epoch is saved in {last_path}: fix the cause and "
                    f"{option('resume', str(out))}"
                ) from eval_error
            if cfg.plots:  # every epoch, so a stopped run still has its curves
                plot_results(out, history)
            log(epoch_line(row, cfg.epochs))
        barrier(info)
        if final_epoch:
            break

    final = None
    if val_set is not None:  # rank 0 only
        from edge_yolo.eval import validate

        result, about = validate(
            best_path,
            cfg.val_data or cfg.data,
            imgsz=cfg.imgsz,
            batch=cfg.eval_batch or 2 * batch,
            device=str(device),
            max_images=cfg.eval_max_images,
            progress=cfg.progress,
        )
        final = {"checkpoint": str(best_path), "model": about["model"], "text": str(result),
                 **result.to_dict()}
        log(f"{best_path} without the PGI branch, fused ({final['model']}): {final['text']}")
        write_results(out, history, final)
    return TrainResult(out, last_path, best_path, epoch + 1, best_fitness, history, final,
                       updates=ema.updates)


# ---- helpers the loop reads through ---------------------------------------------------


def load_initial_weights(model: YOLO, path: str | os.PathLike) -> str:
    """``--weights``: an edge-yolo checkpoint, else reference YOLOv9 / MIT-rewrite weights.

    The pretrained reader tries our own format first; heads are refitted to the file's branch
    widths and, when the class count differs, the class outputs start fresh (fine-tuning).
    """
    from .pretrained import load_pretrained

    return str(load_pretrained(model, path))


def _progress(loader: Any, total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return loader
    from tqdm import tqdm

    return tqdm(loader, total=total, desc=desc, unit="batch", dynamic_ncols=True)


def _nan_to_zero(x: float) -> float:
    return 0.0 if math.isnan(x) else float(x)


def _quiet(*_args: Any, **_kwargs: Any) -> None:
    pass


__all__ = [
    "ModelSetup",
    "TrainError",
    "TrainForward",
    "TrainResult",
    "fitness",
    "load_initial_weights",
    "train",
]
