"""The CUDA paths of training: AMP (float16 + GradScaler), resume, DDP with SyncBN, QAT.

These need an NVIDIA GPU and skip without one (CI has none). They are run by hand on a GPU
machine: ``python -m pytest -m "slow or not slow" tests/test_cuda.py``. With one GPU, the
two DDP ranks share it over gloo (``EDGE_YOLO_DIST_BACKEND=gloo``: NCCL refuses two ranks on
one device); with two or more GPUs they run on NCCL, one GPU each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edge_yolo.models import load_model
from edge_yolo.models.checkpoint import load_checkpoint
from edge_yolo.train.config import load_recipe
from edge_yolo.train.loop import train
from edge_yolo.train.state import load_resume_point

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}


def config(out: Path, **overrides):
    """yolov9-t (PGI) on 32 synthetic 128 px images: 4 iterations per epoch."""
    values = dict(
        model="yolov9-t",
        data="synthetic:32",
        epochs=2,
        imgsz=128,
        batch=8,
        nbs=8,
        workers=2,
        out=str(out),
        progress=False,
        plots=False,
        device="cuda",
        warmup_epochs=1.0,
        warmup_min_iters=0,
        close_mosaic=1,
        eval_interval=1,
        seed=7,
    )
    return load_recipe(None, {**values, **overrides})


@pytest.fixture(scope="module")
def amp_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("amp") / "run"
    steps: list[int] = []

    def on_step(updates: int, model: torch.nn.Module) -> None:
        steps.append(updates)
        assert next(model.parameters()).is_cuda

    result = train(config(out), on_step=on_step)
    last = torch.load(result.last, weights_only=True)
    return out, result, steps, float(last["train"]["scaler"]["scale"])


def test_amp_float16_trains_on_cuda(amp_run) -> None:
    out, result, steps, scale = amp_run
    assert result.epochs_completed == 2 and steps, "no optimizer step ran"
    rows = json.loads((out / "results.json").read_text())["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float):
                assert value == value and abs(value) != float("inf"), (key, value)
    assert 0.0 <= rows[-1]["val/map50_95"] <= 1.0  # evaluated on the GPU
    # GradScaler was on (float16 AMP) and its state is in the checkpoint for resume
    assert 0 < scale < 2.0**16  # started at 65536 and backed off on float16 overflows


def tensors(out) -> list[torch.Tensor]:
    """The tensors of a model's output, nested tuples flattened."""
    return [out] if isinstance(out, torch.Tensor) else [t for o in out for t in tensors(o)]


def test_cuda_checkpoint_runs_on_cpu_like_on_gpu(amp_run) -> None:
    out, result, _, _ = amp_run
    model, _ = load_model(result.best)  # map_location=cpu inside
    model.eval()
    assert not next(model.parameters()).is_cuda
    x = torch.rand(2, 3, 128, 128)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # TF32 convolutions round to 10 bits
    try:
        with torch.no_grad():
            cpu = model(x)
            gpu = model.to("cuda")(x.to("cuda"))
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    cpu_t, gpu_t = tensors(cpu), tensors(gpu)
    assert len(cpu_t) == len(gpu_t) >= 1
    for c, g in zip(cpu_t, gpu_t):
        assert g.is_cuda
        torch.testing.assert_close(g.cpu(), c, atol=2e-3, rtol=2e-3)


def test_cuda_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    class Interrupt(Exception):
        pass

    full = train(config(tmp_path / "full", epochs=2, eval_interval=0))

    def crash_in_epoch_2(updates: int, _model: torch.nn.Module) -> None:
        if updates > 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(config(tmp_path / "cut", epochs=2, eval_interval=0), on_step=crash_in_epoch_2)
    point = load_resume_point(tmp_path / "cut")
    assert point.epoch == 1
    assert float(point.train["scaler"]["scale"]) > 0  # the GradScaler's state came back
    resumed = train(config(tmp_path / "cut", epochs=2, eval_interval=0), resume=point)
    assert resumed.epochs_completed == 2
    a = torch.load(full.last, weights_only=True)
    b = torch.load(resumed.last, weights_only=True)
    assert a["train"]["ema_updates"] == b["train"]["ema_updates"]
    assert a["train"]["scaler"]["scale"] == b["train"]["scaler"]["scale"]
    # CUDA kernels such as upsample's backward add atomically: close, not bit-identical
    rows_a = json.loads((tmp_path / "full" / "results.json").read_text())["epochs"]
    rows_b = json.loads((tmp_path / "cut" / "results.json").read_text())["epochs"]
    for key in ("train/box_loss", "train/cls_loss", "train/dfl_loss"):
        assert rows_b[-1][key] == pytest.approx(rows_a[-1][key], rel=2e-2), key


DDP_WORKER = """
import json, os, sys
import torch
from edge_yolo.train.config import load_recipe
from edge_yolo.train.loop import train

snapshots, sync_bn = [], []

def on_step(updates, model):
    sync_bn.append(sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules()))
    snapshots.append({k: p.detach().cpu().clone() for k, p in model.named_parameters()})
    snapshots[-1].update({k: b.detach().cpu().clone() for k, b in model.named_buffers()
                          if "running" in k})

if __name__ == "__main__":  # loader workers start by forkserver and import this file
    values = json.loads(sys.argv[1])
    train(load_recipe(None, values), on_step=on_step)
    torch.save({"params": snapshots, "sync_bn": sync_bn},
               os.path.join(values["out"], f"rank{os.environ['RANK']}.pt"))
"""


def test_two_ddp_ranks_with_sync_bn_on_cuda(tmp_path: Path) -> None:
    gpus = torch.cuda.device_count()
    env = dict(ENV)
    values = dict(
        model="yolov9-t", data="synthetic:32", epochs=2, imgsz=128, batch=8, nbs=8,
        workers=1, progress=False, plots=False, sync_bn=True, eval_interval=1, seed=3,
        out=str(tmp_path / "run"),
    )
    if gpus >= 2:
        values["device"] = "cuda"  # NCCL, rank r on cuda:r
    else:
        values["device"] = "cuda:0"
        env["EDGE_YOLO_DIST_BACKEND"] = "gloo"
    (tmp_path / "worker.py").write_text(DDP_WORKER)
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(tmp_path / "worker.py"), json.dumps(values)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-4000:]
    assert "2 process(es)" in run.stdout
    ranks = [torch.load(tmp_path / "run" / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["sync_bn"] and all(n > 0 for n in ranks[0]["sync_bn"] + ranks[1]["sync_bn"])
    assert len(ranks[0]["params"]) == len(ranks[1]["params"]) >= 4
    for step, (p0, p1) in enumerate(zip(ranks[0]["params"], ranks[1]["params"])):
        # all-reduced gradients: equal parameters. Running BN statistics are equal only with
        # SyncBN; without it each rank updates its own from its shard (checked on CPU: they
        # differ after step 1 by up to 5e-3)
        for name in p0:
            torch.testing.assert_close(p1[name], p0[name], atol=1e-5, rtol=1e-4,
                                       msg=lambda m, n=name, s=step: f"step {s + 1}, {n}: {m}")
    # the checkpoint holds plain BatchNorm weights that load on a machine without a GPU
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert not any("SyncBatchNorm" in str(type(v)) for v in ckpt["state_dict"].values())
    model, _ = load_model(tmp_path / "run" / "best.pt")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    with torch.no_grad():
        model.eval()(torch.rand(1, 3, 128, 128))


@pytest.mark.slow
def test_qat_fine_tunes_on_cuda(amp_run, tmp_path: Path) -> None:
    pytest.importorskip("nncf")
    _, result, _, _ = amp_run
    out = tmp_path / "qat"
    run = subprocess.run(
        [sys.executable, "-m", "edge_yolo", "qat", "--weights", str(result.best),
         "--target", "jetson", "--updates", "10", "--batch", "8", "--imgsz", "128",
         "--calib-size", "16", "--device", "cuda", "--no-progress", "--out", str(out)],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-4000:]
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    ckpt = torch.load(out / "best.pt", weights_only=True, map_location="cpu")
    assert ckpt["qat"]["target"] == "jetson"
    assert not any(t.is_cuda for t in ckpt["state_dict"].values())
