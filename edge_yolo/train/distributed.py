"""torchrun / DistributedDataParallel plumbing; a single process is world size 1.

Launch: ``torchrun --nproc_per_node=N -m edge_yolo train ...``. torchrun sets RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; we read them here and nowhere else.
Backend: NCCL on CUDA, gloo on CPU. ``EDGE_YOLO_DIST_BACKEND=gloo`` takes gloo on GPUs too:
where NCCL is missing (Windows), or to run several ranks on one GPU (``--device cuda:0``),
which NCCL refuses; that is how a one-GPU machine checks DDP and SyncBN.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import EdgeYoloError, option


class DeviceError(EdgeYoloError, ValueError):
    """A requested device that this machine or this launch cannot provide."""


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, shows progress, evaluates and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def select_device(requested: str | None, local_rank: int = 0) -> torch.device:
    """``None``: CUDA when available, else CPU; ``cuda`` under torchrun means this rank's GPU."""
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise DeviceError(f"{option('device', requested)}: expected cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"{option('device', requested)}: CUDA is not available on this machine")
        per_rank = device.index is None
        if per_rank:
            device = torch.device("cuda", local_rank)
        if device.index >= (count := torch.cuda.device_count()):
            fix = (f"launch at most {count} process(es) per machine" if per_rank
                   else f"use cuda:0 to cuda:{count - 1}")
            raise DeviceError(
                f"{option('device', requested)}: this process wants cuda:{device.index}, but the "
                f"machine has {count} GPU(s); {fix}")
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise DeviceError(f"--device {requested}: only cpu and cuda are supported")
    return device


def init_distributed(requested_device: str | None = None) -> DistInfo:
    """Join the process group when launched by torchrun; otherwise a world of one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(requested_device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = dist_backend(device)
        if backend == "nccl" and device.index != local_rank:
            # NCCL refuses two ranks on one GPU with a bare "invalid usage"
            raise DeviceError(
                f"{option('device', requested_device)}: under torchrun every process would use "
                f"{device}, and NCCL needs one GPU per process: give {option('device', 'cuda')} "
                "(rank r on cuda:r), or set EDGE_YOLO_DIST_BACKEND=gloo to share one GPU")
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            device_id=device if backend == "nccl" else None,
            # rank 0 evaluates and saves while the others wait at a barrier: allow for it
            timeout=datetime.timedelta(minutes=60),
        )
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def dist_backend(device: torch.device) -> str:
    """NCCL on CUDA, gloo on CPU, unless ``EDGE_YOLO_DIST_BACKEND`` names one."""
    chosen = os.environ.get("EDGE_YOLO_DIST_BACKEND", "").strip().lower()
    if not chosen:
        return "nccl" if device.type == "cuda" else "gloo"
    if chosen not in ("nccl", "gloo"):
        raise DeviceError(f"EDGE_YOLO_DIST_BACKEND={chosen}: expected nccl or gloo")
    if chosen == "nccl" and device.type != "cuda":
        raise DeviceError("EDGE_YOLO_DIST_BACKEND=nccl needs CUDA devices; on CPU use gloo")
    return chosen


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Average a tensor over ranks (for logging the same loss on every rank)."""
    if info.distributed:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= info.world_size
    return t


def broadcast_object(obj: object, info: DistInfo) -> object:
    """Rank 0's value on every rank (e.g. whether to stop)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
