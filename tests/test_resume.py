"""Checkpoints and resume: an interrupted run, resumed, ends where the uninterrupted one does."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_yolo.models import load_model, save_checkpoint
from edge_yolo.models.checkpoint import CheckpointError
from edge_yolo.train.config import load_recipe
from edge_yolo.train.loop import train
from edge_yolo.train.state import load_resume_point, rng_state, set_rng_state

REPO = Path(__file__).resolve().parents[1]


def tiny_config(out: Path, **overrides):
    """gelan-t on 8 synthetic 64 px images: 2 iterations per epoch, a few seconds a run."""
    values = dict(
        model="gelan-t",
        data="synthetic:8",
        epochs=2,
        imgsz=64,
        batch=4,
        nbs=8,
        workers=0,
        out=str(out),
        progress=False,
        plots=False,
        threads=1,
        close_mosaic=1,
        warmup_epochs=1.0,  # 2 of the 4 iterations: the warm-up ends in epoch 2
        warmup_min_iters=0,
        seed=3,
    )
    return load_recipe(None, {**values, **overrides})


class Interrupt(Exception):
    pass


def test_resumed_run_reproduces_uninterrupted_run(tmp_path: Path) -> None:
    # Mosaic on in epoch 1 and off in epoch 2, warmup spanning both: the resumed epoch must
    # find the same LR/momentum position, EMA, optimizer momentum, data order and augmentation.
    steps: list[int] = []
    full = train(tiny_config(tmp_path / "full"), on_step=lambda n, m: steps.append(n))
    # 2 iterations/epoch; accumulation ramps to 2 during warm-up, and the last iteration of
    # an epoch always steps: steps after iterations 1, 2 and 4
    assert steps == [1, 2, 3]

    def crash_in_epoch_2(updates: int, _model: torch.nn.Module) -> None:
        if updates == 3:  # the step of epoch 2: last.pt holds epoch 1
            raise Interrupt

    with pytest.raises(Interrupt):
        train(tiny_config(tmp_path / "cut"), on_step=crash_in_epoch_2)
    point = load_resume_point(tmp_path / "cut")
    assert point.epoch == 1
    after_epoch_1 = point.train["model"]
    resumed = train(tiny_config(tmp_path / "cut"), resume=point)
    assert resumed.epochs_completed == 2

    a = torch.load(full.last, weights_only=True)
    b = torch.load(resumed.last, weights_only=True)
    assert a["train"]["epoch"] == b["train"]["epoch"] == 2
    assert a["train"]["ema_updates"] == b["train"]["ema_updates"] == 3
    assert a["train"]["scheduler"]["last_epoch"] == b["train"]["scheduler"]["last_epoch"] == 2
    for key in ("state_dict",):  # the EMA weights
        for name, value in a[key].items():
            torch.testing.assert_close(b[key][name], value, atol=1e-6, rtol=1e-5, msg=name)
    for name, value in a["train"]["model"].items():  # the raw weights
        torch.testing.assert_close(b["train"]["model"][name], value, atol=1e-6, rtol=1e-5, msg=name)
    moms_a = [s["momentum_buffer"] for s in a["train"]["optimizer"]["state"].values()]
    moms_b = [s["momentum_buffer"] for s in b["train"]["optimizer"]["state"].values()]
    for ma, mb in zip(moms_a, moms_b, strict=True):
        torch.testing.assert_close(mb, ma, atol=1e-6, rtol=1e-5)
    # epoch 2 changed the weights, so the equality above is not "nothing moved"
    moved = [k for k, v in after_epoch_1.items() if not torch.equal(v, b["train"]["model"][k])]
    assert len(moved) > len(after_epoch_1) // 2
    rows = json.loads((tmp_path / "cut" / "results.json").read_text())["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_checkpoint_is_weights_only_and_self_describing(tmp_path: Path) -> None:
    result = train(tiny_config(tmp_path / "run", epochs=1))
    ckpt = torch.load(result.last, weights_only=True)  # raises on anything but plain data
    assert ckpt["train_config"]["model"] == "gelan-t"
    assert set(ckpt["train"]) >= {"model", "optimizer", "scheduler", "scaler", "rng", "epoch"}
    assert set(ckpt["train"]["rng"]) >= {"torch", "numpy", "python"}
    # the checkpoint's model weights are the EMA (what was evaluated), not the raw weights
    differs = [
        k
        for k, v in ckpt["state_dict"].items()
        if v.is_floating_point() and not torch.equal(v, ckpt["train"]["model"][k])
    ]
    assert differs
    model, _ = load_model(result.best)
    assert model.name == "gelan-t" and model.num_classes == 5


def test_rng_state_roundtrip_through_weights_only_file(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == expected


def test_resume_refuses_a_checkpoint_without_training_state(tmp_path: Path) -> None:
    from edge_yolo.models import create_model

    path = save_checkpoint(tmp_path / "weights.pt", create_model("gelan-t", num_classes=2))
    with pytest.raises(CheckpointError, match="no training state.*weights="):
        load_resume_point(path)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        load_resume_point(tmp_path / "missing-run")


@pytest.mark.slow
def test_sigkilled_training_process_resumes(tmp_path: Path) -> None:
    """A real ``edge-yolo train`` process is SIGKILLed mid-epoch and resumed with --resume."""
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "edge_yolo",
        "train",
        "--model",
        "gelan-t",
        "--data",
        "synthetic:48",
        "--epochs",
        "4",
        "--imgsz",
        "64",
        "--batch",
        "4",
        "--workers",
        "0",
        "--threads",
        "1",
        "--eval-interval",
        "0",
        "--no-progress",
        "--no-plots",
        "--out",
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 240
        while not (out / "last.pt").exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "epoch 1 never finished"
            time.sleep(0.05)
        time.sleep(0.5)  # into epoch 2 (12 iterations of ~0.1-0.3 s each)
        assert proc.poll() is None, "training finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = torch.load(out / "last.pt", weights_only=True)  # intact despite the kill
    saved_epoch = saved["train"]["epoch"]
    assert 1 <= saved_epoch < 4

    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_yolo",
            "train",
            "--resume",
            str(out),
            "--threads",
            "1",
            "--no-progress",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert f"from epoch {saved_epoch + 1}/4" in resumed.stdout
    epochs_run = re.findall(r"^epoch (\d+)/4:", resumed.stdout, flags=re.M)
    assert epochs_run == [str(e) for e in range(saved_epoch + 1, 5)]
    final = torch.load(out / "last.pt", weights_only=True)
    assert final["train"]["epoch"] == 4
    rows = json.loads((out / "results.json").read_text())["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
