"""Sharded index building across processes (accelerate / torchrun) and nodes (Ray).

Chunks are independent files under ``out/chunks`` (see :func:`build_index`), so sharding
is a matter of who encodes which chunk: shard ``rank/world`` encodes the chunks with
``number % world == rank``, and rank 0 waits for the others and writes the index. All
shards need the same ``out`` (a shared filesystem across nodes). A shard that died is
simply rerun: its finished chunks are reused.

- one machine, several GPUs: ``accelerate launch --num_processes 4 -m cultureclip index
  … --device cuda`` (each process reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``);
- several machines: :func:`build_index_ray` runs the shards as Ray tasks, then writes the
  index in the calling process.
"""

from __future__ import annotations

import logging
from typing import Any

from cultureclip.retrieval.index import IndexConfig, IndexSummary, build_index

logger = logging.getLogger(__name__)


def _shard_task(config: dict[str, Any]) -> IndexSummary:
    return build_index(IndexConfig.model_validate(config), progress=False)


def build_index_ray(
    config: IndexConfig,
    shards: int,
    *,
    num_gpus_per_shard: float = 0,
    num_cpus_per_shard: float = 1,
    address: str | None = None,
) -> IndexSummary:
    """Encodes ``config`` in ``shards`` Ray tasks (shard ``rank/shards`` each); the rank-0
    task waits for the others and writes the index. Returns rank 0's summary.

    Starts a local Ray runtime unless one is running or ``address`` names a cluster; the
    tasks must all see ``config.out`` (a shared filesystem across nodes).
    """
    import ray

    if shards < 1:
        raise ValueError("shards must be at least 1")
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_gpus=num_gpus_per_shard, num_cpus=num_cpus_per_shard)(_shard_task)
    base = config.model_dump(mode="json")
    futures = [task.remote({**base, "shard": f"{rank}/{shards}"}) for rank in range(shards)]
    summaries = ray.get(futures)
    logger.info("%d Ray shards done", shards)
    return summaries[0]
