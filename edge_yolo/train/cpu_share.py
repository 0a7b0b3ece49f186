"""How many cores a CPU training process really has, so it never runs more threads than that.

Measured on a 2-core machine (gelan-t, 320 px, batch 8, ``benchmarks/bench_train.py --busy 1``):
with one other process spinning on a core, 2 torch threads trained at 4.4 images/s, 1 thread
at 9.8, against 15.0 on the quiet machine. With more threads than free cores, every parallel
region (and a training step has hundreds of small ones: batch norm, activations) waits at its
barrier for a thread the scheduler has parked behind the other process: the step collapses
far beyond the share of CPU lost. ``OMP_WAIT_POLICY=PASSIVE`` only halved the damage (6.0)
and cost a third of the quiet speed (9.5). One thread per free core degrades in proportion.

:class:`CPUShare` measures the cores other processes keep busy (``/proc/stat`` minus the CPU
time of this process and its descendants, such as loader workers, between two readings);
:func:`threads_for` turns that into a thread count. Standard library only; where
``/proc/stat`` is unreadable it measures nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


class CPUShare:
    """Between two calls of :meth:`available`: the cores not kept busy by other processes."""

    def __init__(self, stat: str | os.PathLike = "/proc/stat",
                 cpus: set[int] | None = None) -> None:
        self.stat = Path(stat)
        try:  # only the CPUs this process may run on (a container sees the host's others)
            self.cpus = cpus if cpus is not None else set(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self.cpus = set(range(os.cpu_count() or 1))
        self.cores = len(self.cpus)
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        """(busy CPU-seconds of our CPUs, this process's CPU-seconds, wall seconds) now."""
        try:
            lines = self.stat.read_text().splitlines()
        except OSError:
            return None
        busy, seen = 0, 0
        for line in lines:
            name, *values = line.split() or [""]
            cpu = name[3:]
            if not (name.startswith("cpu") and cpu.isdigit() and int(cpu) in self.cpus):
                continue
            ticks = [int(v) for v in values[:8]]
            busy += sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
            seen += 1
        if not seen:
            return None
        return busy / self.tick, self._own_seconds(), time.monotonic()

    def _own_seconds(self) -> float:
        """CPU-seconds of this process and its descendants (data-loading workers are ours,
        not competition), live ones from ``/proc/<pid>/stat``, finished ones from times()."""
        me = os.times()
        total = me.user + me.system + me.children_user + me.children_system
        children: dict[int, list[int]] = {}
        ticks: dict[int, int] = {}
        proc = self.stat.parent
        for entry in proc.glob("[0-9]*/stat"):
            try:
                text = entry.read_text()
            except OSError:
                continue  # gone meanwhile
            fields = text[text.rfind(")") + 2:].split()  # after "pid (name) "
            if len(fields) < 13:
                continue
            pid = int(entry.parent.name)
            children.setdefault(int(fields[1]), []).append(pid)
            ticks[pid] = int(fields[11]) + int(fields[12])  # utime + stime
        todo, seen = list(children.get(os.getpid(), [])), set()
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            total += ticks.get(pid, 0) / self.tick
            todo.extend(children.get(pid, []))
        return total

    def available(self) -> float | None:
        """Cores free for this process since the last call (or construction); None when it
        cannot be measured (no ``/proc/stat``, or no time passed)."""
        now, last = self._sample(), self._last
        self._last = now
        if now is None or last is None or now[2] - last[2] <= 0:
            return None
        others = max(0.0, (now[0] - last[0]) - (now[1] - last[1])) / (now[2] - last[2])
        return max(0.0, self.cores - others)


def threads_for(available: float | None, cores: int) -> int:
    """Threads for ``available`` free cores: one per free core (rounded), at least one, at
    most ``cores``; all cores when nothing was measured."""
    if available is None:
        return cores
    return max(1, min(cores, int(available + 0.5)))


def loader_workers(requested: int | None, device_type: str, processes: int = 1) -> int:
    """Data-loading processes per training process: ``requested``, else one for the machine.

    On a CPU the step's torch threads want every core, and a loader process competes with
    them: on 2 cores (gelan-t, 320 px, batch 8) 0 workers trained at 14.4 images/s, 1 at 13.4
    and 2 at 13.9, so a CPU of up to 2 cores per process loads in the training process; larger
    ones get a worker per 4 cores (at most 4). A GPU leaves the CPU to the loader: all but one
    core, at most 8 (as the peer tools cap it; on an H200 with 16 cores a 640 px yolov9-t run
    was still loader-bound at 8).
    """
    if requested is not None:
        return requested
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    per_process = max(1, cores // max(1, processes))
    if device_type == "cuda":
        return max(1, min(8, per_process - 1))
    return 0 if per_process <= 2 else min(4, per_process // 4)


def fit_threads(share: CPUShare, most: int, log: Callable[[str], None]) -> None:
    """Run as many torch threads as there are cores the other processes leave free, at most
    ``most`` (see :mod:`edge_yolo.train.cpu_share`); say so when that changes the count."""
    import torch

    from ..errors import option

    free = share.available()
    threads = threads_for(free, min(most, share.cores))
    if threads != torch.get_num_threads():
        busy = "" if free is None else f": other processes keep {share.cores - free:.1f} busy"
        log(f"training with {threads} thread(s) on {share.cores} cores{busy} (more threads "
            f"than free cores stall every step; {option('threads')} fixes the count)")
        torch.set_num_threads(threads)
