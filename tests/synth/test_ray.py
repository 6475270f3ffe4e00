from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cultureclip.synth.pipeline import run_synth
from cultureclip.synth.standin import StandInLLMServer, SynthScript


@pytest.mark.slow
def test_ray_tasks_over_two_workers_match_a_single_run(
    tmp_path: Path, script: SynthScript, make_config: Any
) -> None:
    ray = pytest.importorskip("ray")
    from cultureclip.synth.distributed import run_with_ray

    with StandInLLMServer(script) as server:
        single = make_config(tmp_path / "single", server.base_url, filter={"backend": "none"})
        run_synth(single)
        distributed = single.model_copy(update={"out": str(tmp_path / "ray")})
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            reports, merged = run_with_ray(distributed, shards=2)
        finally:
            ray.shutdown()
    import pyarrow.parquet as pq

    # Two tasks, each with its own slice of the 4 country x category cells, in its own files.
    assert len(reports) == 2
    assert sum(r[0]["total"] for r in reports) == 4
    files = {p.name for p in (tmp_path / "ray" / "work").glob("concepts.*.jsonl")}
    assert files <= {"concepts.shard-0-of-2.jsonl", "concepts.shard-1-of-2.jsonl"} and files
    assert merged.records == 21
    single_rows = pq.read_table(tmp_path / "single" / "cultwin.parquet").to_pylist()
    assert pq.read_table(tmp_path / "ray" / "cultwin.parquet").to_pylist() == single_rows
