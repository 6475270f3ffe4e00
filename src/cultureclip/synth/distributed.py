"""Scaling out on existing engines: Ray tasks across nodes (accelerate lives in the images stage).

``run_with_ray`` starts one Ray task per shard; each task runs the whole pipeline on
its shard (:func:`~cultureclip.synth.pipeline.run_synth` with ``Shard(i, n)``) and
appends to its own store files, then the driver merges. ``out_dir`` must be on a
filesystem every node sees (NFS, Lustre, a mounted bucket); a task that dies is retried
by Ray and resumes from what its shard already stored.
"""

from __future__ import annotations

from typing import Any

from cultureclip.core.errors import InputError
from cultureclip.core.store import Shard
from cultureclip.synth.config import SynthConfig
from cultureclip.synth.pipeline import MergeReport, merge, run_synth


def _run_shard(config_data: dict[str, Any], index: int, count: int) -> list[dict[str, Any]]:
    config = SynthConfig.model_validate(config_data)
    report = run_synth(config, shard=Shard(index, count), merge_after=False)
    return [vars(stage) for stage in report.stages]


def run_with_ray(
    config: SynthConfig,
    *,
    shards: int,
    address: str | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    max_retries: int = 2,
) -> tuple[list[list[dict[str, Any]]], MergeReport]:
    """Runs ``shards`` Ray tasks (one per shard) and merges; returns per-shard stage reports.

    ``address``: ``"auto"`` joins the cluster of ``ray start``; None starts a local one.
    Give image-rendering tasks ``num_gpus=1`` so Ray places one per GPU.
    """
    import ray

    if shards < 1:
        raise InputError("shards must be at least 1")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries)(_run_shard)
        data = config.model_dump(mode="json")
        data["progress"] = False  # many tasks drawing bars into one driver log is noise
        reports = ray.get([task.remote(data, i, shards) for i in range(shards)])
    finally:
        if started_here:
            ray.shutdown()
    config.save(config.out_dir)
    return reports, merge(config)
