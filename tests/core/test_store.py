from __future__ import annotations

from pathlib import Path

import pytest

from cultureclip.core.io import stable_hash
from cultureclip.core.store import (
    FailureLog,
    ResultStore,
    Shard,
    open_failures,
    write_failure_report,
)


def test_shards_partition_the_items_deterministically() -> None:
    roots = [stable_hash("cell", i) for i in range(200)]
    shards = [Shard(i, 3) for i in range(3)]
    owners = [[s.index for s in shards if s.owns(r)] for r in roots]
    assert all(len(o) == 1 for o in owners)
    assert {o[0] for o in owners} == {0, 1, 2}
    assert Shard.parse("1/3") == Shard(1, 3) and Shard.parse(None) == Shard()
    for bad in ("3/3", "a/b", "1"):
        with pytest.raises(ValueError, match="shard"):
            Shard.parse(bad)


def test_store_reads_every_writer_and_skips_a_torn_tail(tmp_path: Path) -> None:
    ResultStore(tmp_path, "captions", "shard-0-of-2").add({"key": "a", "v": 1})
    store = ResultStore(tmp_path, "captions", "shard-1-of-2")
    store.add({"key": "b", "v": 2})
    with open(store.path, "a", encoding="utf-8") as handle:
        handle.write('{"key": "c", "v"')  # a write cut by SIGKILL
    fresh = ResultStore(tmp_path, "captions")
    assert sorted(r["key"] for r in fresh.records()) == ["a", "b"]
    assert "c" not in fresh


def test_failures_are_open_until_the_item_succeeds(tmp_path: Path) -> None:
    log = FailureLog(tmp_path)
    log.add("twins", "k1", "invalid answer", raw=["{bad"])
    log.add("twins", "k2", "invalid answer", raw=["{also bad"])
    ResultStore(tmp_path, "twins").add({"key": "k1"})
    assert [f["key"] for f in open_failures(tmp_path)] == ["k2"]
    summary = write_failure_report(tmp_path, tmp_path / "out")
    assert summary["open_failures"] == 1 and summary["by_stage"] == {"twins": 1}
    assert (tmp_path / "out" / "failures_summary.json").exists()


def test_changed_fields_names_every_differing_field() -> None:
    from cultureclip.core.store import changed_fields

    assert changed_fields({"a": 1, "b": 2}, {"a": 1, "b": 2}) == []
    assert changed_fields({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 0}) == ["b", "c"]
    assert changed_fields({"a": 1, "gone": 0}, {"a": 1}) == ["gone"]
    assert changed_fields(None, {"x": 1, "a": 2}) == ["a", "x"]
    assert changed_fields({}, {}) == ["(nothing stored)"]
    assert changed_fields({"a": 1, "old": 0}, {"a": 2, "new": 0}, shared_only=True) == ["a"]
