"""CPU threads: as many as the CPUs this process may use, not as many as the host has.

PyTorch sizes its intra-op pool from the host's core count. On a shared machine (a
SLURM allocation, a container with a CPU quota, ``taskset``) that oversubscribes the
CPUs this job was given, and image preprocessing gets an order of magnitude slower.
:func:`configure_threads` sizes the pool from the CPU affinity mask and the cgroup quota,
unless the user chose (``OMP_NUM_THREADS`` or ``CULTURECLIP_THREADS``).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def available_cpus() -> int:
    """CPUs this process may run on: the affinity mask, capped by a cgroup CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        count = min(count, max(1, math.floor(quota)))
    return max(1, count)


def _cgroup_quota() -> float | None:
    try:  # cgroup v2: "max 100000" or "200000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def configure_threads() -> int:
    """Sizes torch's intra-op threads for this process; returns the number chosen.

    ``CULTURECLIP_THREADS`` (or ``OMP_NUM_THREADS``) wins; otherwise the pool only ever
    shrinks, to the CPUs this process may use, so a caller's smaller choice stands. When
    torch is not imported yet (the CLI at start-up), ``OMP_NUM_THREADS`` is set instead,
    which torch reads when it starts (only where the process may use fewer CPUs than the
    host has, or the user chose): a command that never needs torch does not import it.
    """
    chosen = os.environ.get("CULTURECLIP_THREADS") or os.environ.get("OMP_NUM_THREADS")
    try:
        wanted = max(1, int(chosen)) if chosen else None
    except ValueError:
        wanted = None
    torch = sys.modules.get("torch")
    if torch is None:
        threads = wanted or available_cpus()
        limited = threads < (os.cpu_count() or threads)
        if not os.environ.get("OMP_NUM_THREADS") and (wanted or limited):
            os.environ["OMP_NUM_THREADS"] = str(threads)
        return threads
    threads = wanted or min(torch.get_num_threads(), available_cpus())
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
        logger.debug("torch intra-op threads: %d", threads)
    return threads


def worker_init(_worker_id: int) -> None:
    """DataLoader workers decode one image each at a time: one thread apiece."""
    import torch

    torch.set_num_threads(1)
