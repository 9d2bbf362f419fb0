"""What machine a measurement ran on: one description, shared by the bench's run record and the benchmarks."""

from __future__ import annotations

import os
import platform


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine() or "cpu"


def machine(*, threads: bool = True) -> str:
    """``CPU, N cores, M GiB RAM[, torch threads T], OS release`` (threads: torch's current intra-op count)."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    parts = [cpu_name(), f"{os.cpu_count()} cores", f"{mem:.0f} GiB RAM"]
    if threads:
        import torch

        parts.append(f"torch threads {torch.get_num_threads()}")
    return ", ".join([*parts, f"{platform.system()} {platform.release()}"])
