"""The training loop's parts (parameter groups, warmup, LR schedule, EMA) and a tiny real run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from edge_yolo.models import create_model, save_checkpoint
from edge_yolo.train.config import load_recipe
from edge_yolo.train.ema import ModelEMA
from edge_yolo.train.loop import load_initial_weights, train
from edge_yolo.train.optim import (
    BIASES,
    BN_WEIGHTS,
    WEIGHTS,
    amp_dtype,
    apply_warmup,
    build_optimizer,
    fit_warmup,
    lr_lambda,
    warmup_iters,
)


def test_three_parameter_groups_cover_every_parameter_once() -> None:
    model = create_model("yolov9-t", num_classes=3)
    opt = build_optimizer(model, lr=0.01, momentum=0.937, weight_decay=5e-4)
    groups = [set(map(id, g["params"])) for g in opt.param_groups]
    assert sum(map(len, groups)) == len(set().union(*groups)) == len(list(model.parameters()))
    bn_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    biases = {id(p) for n, p in model.named_parameters() if n.endswith(".bias")}
    assert groups[BN_WEIGHTS] == bn_weights
    assert groups[BIASES] == biases  # conv biases of the head and BN biases alike
    assert all(p.ndim == 4 for p in opt.param_groups[WEIGHTS]["params"])  # conv kernels only
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0, 0.0]
    assert all(g["nesterov"] and g["momentum"] == 0.937 for g in opt.param_groups)


def test_warmup_ramps_lr_and_momentum_and_bias_lr_falls() -> None:
    model = create_model("gelan-t", num_classes=2)
    opt = build_optimizer(model, lr=0.01, momentum=0.937, weight_decay=5e-4)
    for g in opt.param_groups:
        g["initial_lr"] = 0.01
    assert warmup_iters(3, 10, 100) == 100 and warmup_iters(3, 1000, 100) == 3000
    assert warmup_iters(0, 10, 0) == 0
    kw = dict(bias_lr=0.1, momentum=(0.8, 0.937))
    apply_warmup(opt, 0, 100, 1.0, **kw)
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0, 0.1]
    assert all(g["momentum"] == pytest.approx(0.8) for g in opt.param_groups)
    apply_warmup(opt, 50, 100, 1.0, **kw)
    assert opt.param_groups[WEIGHTS]["lr"] == pytest.approx(0.005)
    assert opt.param_groups[BIASES]["lr"] == pytest.approx(0.055)
    apply_warmup(opt, 100, 100, 0.9, **kw)  # ends on the scheduled LR of the epoch
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.009] * 3)
    assert all(g["momentum"] == pytest.approx(0.937) for g in opt.param_groups)


def test_adamw_keeps_the_groups_and_warms_up_its_first_beta() -> None:
    model = create_model("gelan-t", num_classes=2)
    opt = build_optimizer(model, lr=0.002, momentum=0.9, weight_decay=5e-4, kind="AdamW")
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0, 0.0]
    for g in opt.param_groups:
        g["initial_lr"] = 0.002
    apply_warmup(opt, 0, 100, 1.0, bias_lr=0.1, momentum=(0.8, 0.9))
    assert all(g["betas"] == pytest.approx((0.8, 0.999)) and "momentum" not in g
               for g in opt.param_groups)
    apply_warmup(opt, 100, 100, 1.0, bias_lr=0.1, momentum=(0.8, 0.9))
    assert all(g["betas"] == pytest.approx((0.9, 0.999)) for g in opt.param_groups)
    with pytest.raises(ValueError, match="SGD, AdamW"):
        build_optimizer(model, lr=0.01, momentum=0.9, weight_decay=0.0, kind="Adam")


def test_a_warmup_longer_than_half_the_schedule_is_cut_to_a_third() -> None:
    assert fit_warmup(100, 40) == 13  # the README's quick start would never leave warm-up
    assert fit_warmup(20, 40) == 20 and fit_warmup(0, 40) == 0  # a normal run keeps its own
    assert fit_warmup(100, 2) == 1


@pytest.mark.parametrize("cosine", [False, True])
def test_lr_schedule_runs_from_one_to_lrf(cosine: bool) -> None:
    lf = lr_lambda(100, 0.01, cosine)
    values = [lf(e) for e in range(101)]
    assert values[0] == pytest.approx(1.0) and values[-1] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[50] == pytest.approx(0.505)  # both pass through the midpoint


def test_ema_decay_ramps_and_averages() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    ema = ModelEMA(model, decay=0.9999, tau=2000)
    assert ema.ema is not model and not any(p.requires_grad for p in ema.ema.parameters())
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    d = 0.9999 * (1 - math.exp(-1 / 2000))
    assert ema.current_decay() == pytest.approx(d)
    expected = before["0.weight"] * d + model[0].weight.detach() * (1 - d)
    torch.testing.assert_close(ema.state_dict()["0.weight"], expected)
    assert int(ema.state_dict()["1.num_batches_tracked"]) == 7
    ema.updates = 100_000
    assert ema.current_decay() == pytest.approx(0.9999)


def test_amp_is_off_on_cpu_unless_asked() -> None:
    assert amp_dtype(None, torch.device("cpu")) is None
    assert amp_dtype(True, torch.device("cpu")) is torch.bfloat16
    assert amp_dtype(None, torch.device("cuda")) is torch.float16
    assert amp_dtype(False, torch.device("cuda")) is None


def test_initial_weights_from_a_checkpoint_with_other_classes(tmp_path: Path) -> None:
    source = create_model("gelan-t", num_classes=80)
    path = save_checkpoint(tmp_path / "coco.pt", source)
    target = create_model("yolov9-t", num_classes=3)
    message = load_initial_weights(target, path)
    assert "class count 80 -> 3" in message and "auxiliary branch" in message
    torch.testing.assert_close(target.backbone.stem.conv.weight, source.backbone.stem.conv.weight)
    assert target.head.cls[0][-1].weight.shape[0] == 3  # class layers keep their own shape


def test_tiny_run_accumulates_schedules_and_writes_results(tmp_path: Path) -> None:
    steps: list[int] = []
    cfg = load_recipe(
        None,
        dict(
            model="yolov9-t",
            data="synthetic:12",
            epochs=2,
            imgsz=64,
            batch=4,
            nbs=10,
            warmup_epochs=0.0,
            warmup_min_iters=0,
            workers=0,
            threads=1,
            progress=False,
            out=str(tmp_path / "run"),
            close_mosaic=1,
        ),
    )
    result = train(cfg, on_step=lambda n, _m: steps.append(n))
    # 3 iterations/epoch, accumulate round(10 / 4) = 2: a step after iteration 2, and the
    # last iteration of each epoch steps too (no gradient crosses an epoch boundary)
    assert steps == [1, 2, 3, 4]
    ckpt = torch.load(result.last, weights_only=True)
    # weight decay follows the images per step: 5e-4 * batch 4 * accumulate 2 / nominal 10
    assert ckpt["train"]["optimizer"]["param_groups"][WEIGHTS]["weight_decay"] == pytest.approx(
        4e-4
    )
    rows = json.loads((tmp_path / "run" / "results.json").read_text())
    epochs = rows["epochs"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert epochs[0]["lr/weights"] == pytest.approx(0.01)
    assert epochs[1]["lr/weights"] == pytest.approx(0.01 * lr_lambda(2, 0.01, False)(1))
    assert all(r["val/map50_95"] is not None and 0 <= r["val/map50"] <= 1 for r in epochs)
    assert all(r[f"train/{k}_loss"] > 0 for r in epochs for k in ("box", "cls", "dfl"))
    with open(tmp_path / "run" / "results.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]
    assert (tmp_path / "run" / "results.png").stat().st_size > 1000
    # the deployed form: best.pt without its PGI branch, fused, scored
    assert rows["final"]["model"] == "gelan-t"
    assert result.final is not None and result.final["num_images"] >= 1


@pytest.mark.slow
def test_yolov9_t_learns_synthetic_shapes_from_scratch(tmp_path: Path) -> None:
    """The demo recipe cut to 4 epochs (~500 steps, 2-3 min on 2 idle cores): the loss falls
    and best.pt, without its PGI branch, scores well above zero."""
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "demo-synthetic.yaml"
    overrides = dict(
        epochs=4,
        close_mosaic=1,
        eval_interval=100,
        out=str(tmp_path / "run"),
        progress=False,
        plots=False,
    )
    result = train(load_recipe(recipe, overrides))
    losses = [sum(r[f"train/{k}_loss"] for k in ("box", "cls", "dfl")) for r in result.history]
    assert losses[-1] < 0.7 * losses[0], losses
    assert result.final is not None and result.final["model"] == "gelan-t"
    assert result.final["map50"] > 0.05, result.final["text"]


def test_loader_workers_fit_the_machine(monkeypatch) -> None:
    from edge_yolo.train.cpu_share import loader_workers

    cpu, cuda = "cpu", "cuda"
    for cores, on_cpu, on_gpu in [(1, 0, 1), (2, 0, 1), (4, 1, 3), (16, 4, 8), (64, 4, 8)]:
        monkeypatch.setattr("os.sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert loader_workers(None, cpu) == on_cpu, cores
        assert loader_workers(None, cuda) == on_gpu, cores
    assert loader_workers(None, cuda, processes=8) == 7  # 64 cores shared by 8 ranks
    assert loader_workers(3, cpu) == 3  # asked for: kept
