"""CPU training runs one thread per core that other processes leave free."""

from __future__ import annotations

import os
import time

from edge_yolo.train.cpu_share import CPUShare, threads_for

TICK = os.sysconf("SC_CLK_TCK")


def stat_text(busy0: int, busy1: int) -> str:
    """/proc/stat with cpu0 and cpu1 busy for the given ticks (user), the rest idle."""
    return (f"cpu  {busy0 + busy1} 0 0 1000 0 0 0 0 0 0\n"
            f"cpu0 {busy0} 0 0 500 0 0 0 0 0 0\ncpu1 {busy1} 0 0 500 0 0 0 0 0 0\n"
            "cpu2 99999 0 0 0 0 0 0 0 0 0\nintr 1 2 3\n")


def test_another_process_on_one_core_leaves_one_thread(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(stat_text(0, 0))
    share = CPUShare(stat, cpus={0, 1})  # cpu2 is not ours: a container sees the host's
    assert share.cores == 2
    t0 = time.monotonic()
    time.sleep(0.2)
    wall = time.monotonic() - t0
    # another process kept one core busy the whole time (this test's own CPU is tiny)
    stat.write_text(stat_text(int(wall * TICK) + 1, 0))
    free = share.available()
    assert free is not None and 0.6 < free < 1.3
    assert threads_for(free, share.cores) == 1


def test_a_quiet_machine_keeps_every_core(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(stat_text(100, 100))
    share = CPUShare(stat, cpus={0, 1})
    time.sleep(0.1)
    assert threads_for(share.available(), share.cores) == 2


def test_unreadable_stat_measures_nothing(tmp_path):
    share = CPUShare(tmp_path / "missing", cpus={0, 1})
    assert share.available() is None and threads_for(None, 2) == 2
    assert threads_for(0.0, 4) == 1 and threads_for(2.6, 4) == 3 and threads_for(9.0, 4) == 4


def test_our_own_loader_workers_are_not_competition():
    """A child process (a data-loading worker) that spins is this run's own CPU time, while
    it runs (read from /proc) and after it ended (from times())."""
    import subprocess
    import sys

    share = CPUShare()
    before = share._own_seconds()
    child = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\n"
                              "while time.time() - t < 1.5: pass"])
    try:
        time.sleep(1.0)
        running = share._own_seconds() - before  # this process only slept
        child.wait(timeout=10)
    finally:
        child.kill()
    assert running > 0.3, running
    assert share._own_seconds() - before >= running
