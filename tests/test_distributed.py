"""torchrun + DDP on 2 CPU processes (gloo): ranks stay in sync and compute the global batch.

What "the same global batch in one process" means here. Without SyncBN (torch has no CPU
SyncBatchNorm) each rank normalises its share of the batch with that share's BN statistics,
and the loss of each rank is normalised by that rank's sum of target scores. So a single
forward of the whole batch is *not* what DDP computes, by design. What DDP computes is: the
forward of each rank's shard on its own, each shard's loss, and the gradient of their sum
(DDP averages the ranks' gradients; the loop scales each rank's loss by the world size). The
reference below does exactly that in one process, from the shards the ranks were given
(rebuilt with the same loader arguments); with one thread and deterministic kernels on both
sides it matches to float rounding (in practice bit for bit). BN running
statistics do not enter a training step, and DDP broadcasts rank 0's, so only the
parameters are compared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edge_yolo.data import load_dataset
from edge_yolo.data.loader import DetectionLoader
from edge_yolo.models import create_model, save_checkpoint
from edge_yolo.train.config import augment_config, load_recipe
from edge_yolo.train.loss import LossGains, build_loss
from edge_yolo.train.optim import build_optimizer

REPO = Path(__file__).resolve().parents[1]
WORLD = 2
NO_AUGMENT = dict(hsv_h=0, hsv_s=0, hsv_v=0, translate=0, scale=0, fliplr=0, mosaic=0, mixup=0)

WORKER = """
import json, os, sys
import torch
from edge_yolo.train.config import load_recipe
from edge_yolo.train.loop import train

torch.set_num_threads(1)
values = json.loads(sys.argv[1])
snapshots = []

def on_step(updates, model):
    snapshots.append({k: p.detach().clone() for k, p in model.named_parameters()})

train(load_recipe(None, values), on_step=on_step)
torch.save(snapshots, os.path.join(values["out"], f"rank{os.environ['RANK']}.pt"))
"""


def torchrun(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={WORLD}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        cmd + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_two_gloo_ranks_stay_in_sync_and_match_one_process(tmp_path: Path) -> None:
    torch.manual_seed(0)
    init = create_model("gelan-t", num_classes=5)
    save_checkpoint(tmp_path / "init.pt", init, names=["c0", "c1", "c2", "c3", "c4"], imgsz=64)
    values = dict(
        model="gelan-t",
        data="synthetic:12",
        weights=str(tmp_path / "init.pt"),
        epochs=1,
        imgsz=64,
        batch=4,
        nbs=4,
        warmup_epochs=0.0,
        warmup_min_iters=0,
        clip_grad=1e4,  # never bites: clipping to a norm would hide a wrong gradient scale
        eval_interval=0,
        workers=0,
        threads=1,
        progress=False,
        plots=False,
        seed=5,
        augment=NO_AUGMENT,
        out=str(tmp_path / "run"),
    )
    (tmp_path / "worker.py").write_text(WORKER)
    run = torchrun([str(tmp_path / "worker.py"), json.dumps(values)], cwd=REPO)
    assert run.returncode == 0, run.stderr[-4000:]
    ranks = [torch.load(tmp_path / "run" / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert len(ranks[0]) == len(ranks[1]) == 3  # 12 images / global batch 4
    for step, (p0, p1) in enumerate(zip(*ranks)):
        for name in p0:  # DDP's all-reduce gives both ranks bit-identical updates
            assert torch.equal(p0[name], p1[name]), f"step {step + 1}: ranks differ at {name}"
    assert (tmp_path / "run" / "last.pt").is_file()

    # One process, same computation: shards exactly as the ranks' loaders produce them.
    cfg = load_recipe(None, values)
    dataset = load_dataset("synthetic:12", imgsz=64)
    hyp = augment_config({**cfg.augment, "close_mosaic": cfg.close_mosaic})
    loaders = [
        DetectionLoader(
            dataset,
            64,
            cfg.batch // WORLD,
            augment=True,
            hyp=hyp,
            shuffle=True,
            workers=0,
            seed=cfg.seed,
            rank=r,
            world_size=WORLD,
            drop_last=True,
        )
        for r in range(WORLD)
    ]
    for loader in loaders:
        loader.set_epoch(0, cfg.epochs)
    # The ranks ran one thread with deterministic kernels; so must the reference, or a
    # different reduction order flips near-tied anchor assignments and the check is noise.
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        model = init.train()
        criterion = build_loss(model, gains=LossGains(cfg.box, cfg.cls, cfg.dfl))
        optimizer = build_optimizer(model, cfg.lr0, cfg.momentum, cfg.weight_decay)
        for step, shards in enumerate(zip(*loaders)):
            loss = sum(criterion(model.forward_train(x), t)[0] for x, t, _ in shards)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=cfg.clip_grad)
            optimizer.step()
            optimizer.zero_grad()
            for name, p in model.named_parameters():
                torch.testing.assert_close(
                    ranks[0][step][name],
                    p.detach(),
                    atol=1e-6,
                    rtol=1e-5,
                    msg=lambda m, n=name, s=step: f"step {s + 1}, {n}: {m}",
                )
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    moved = [n for n, p in init.named_parameters() if not torch.equal(p, ranks[0][0][n])]
    assert moved  # the comparison is between trained weights, not two copies of the init


@pytest.mark.slow
def test_torchrun_cli_trains_and_rank0_writes_once(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = torchrun(
        [
            "-m",
            "edge_yolo",
            "train",
            "--model",
            "gelan-t",
            "--data",
            "synthetic:16",
            "--epochs",
            "2",
            "--imgsz",
            "64",
            "--batch",
            "4",
            "--workers",
            "0",
            "--threads",
            "1",
            "--no-progress",
            "--no-plots",
            "--out",
            str(out),
        ],
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.stdout.count("epoch 2/2:") == 1  # only rank 0 logs
    assert "2 process(es)" in run.stdout
    rows = json.loads((out / "results.json").read_text())["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2]
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["train"]["epoch"] == 2 and ckpt["train_config"]["batch"] == 4


def test_backend_is_nccl_on_cuda_gloo_on_cpu_unless_the_environment_says(monkeypatch) -> None:
    from edge_yolo.train.distributed import DeviceError, dist_backend

    monkeypatch.delenv("EDGE_YOLO_DIST_BACKEND", raising=False)
    assert dist_backend(torch.device("cuda", 0)) == "nccl"
    assert dist_backend(torch.device("cpu")) == "gloo"
    monkeypatch.setenv("EDGE_YOLO_DIST_BACKEND", "Gloo")  # several ranks on one GPU
    assert dist_backend(torch.device("cuda", 0)) == "gloo"
    monkeypatch.setenv("EDGE_YOLO_DIST_BACKEND", "nccl")
    with pytest.raises(DeviceError, match="nccl needs CUDA"):
        dist_backend(torch.device("cpu"))
    monkeypatch.setenv("EDGE_YOLO_DIST_BACKEND", "mpi")
    with pytest.raises(DeviceError, match="expected nccl or gloo"):
        dist_backend(torch.device("cpu"))


def test_gpu_placement_mistakes_are_named_before_nccl_sees_them(monkeypatch) -> None:
    from edge_yolo.train import distributed as d

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.delenv("EDGE_YOLO_DIST_BACKEND", raising=False)
    for key, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(d.DeviceError, match="wants cuda:1, but the machine has 1 GPU.*at most 1"):
        d.init_distributed("cuda")  # two processes launched on a one-GPU machine
    with pytest.raises(d.DeviceError, match="wants cuda:3.*use cuda:0 to cuda:0"):
        d.select_device("cuda:3")
    # seen on an H200: NCCL's own answer to two ranks on cuda:0 is "invalid usage"
    with pytest.raises(d.DeviceError, match="NCCL needs one GPU per process.*gloo"):
        d.init_distributed("cuda:0")
