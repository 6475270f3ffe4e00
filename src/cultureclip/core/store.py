"""The one keyed result store: resumable work for every stage, the failure log, and shards.

Every work item has a key, a hash of everything that determines its result (inputs,
prompt id, model, seed: ``utils.io.stable_hash``). A stage appends one fsynced JSON line
per finished item to ``work/<stage>[.<writer>].jsonl``; on restart it reads every file of that stage
(a line torn by a kill is skipped) and does only the keys not yet there. Each writer
(a shard, an accelerate process, a Ray task) appends to its own file, so concurrent
writers never interleave bytes; readers take the union.

Failures go to ``failures[.<writer>].jsonl`` and are never results: a failed item is
retried by the next run, and the failure report lists only failures still open.

Whole outputs (a trained model, an index's chunks, an eval result) are keyed the same way:
the output stores the identity that decided it, and :func:`changed_fields` says which parts
of a new run's identity differ, so a stage reuses the output only when none do and names
the fields when it cannot.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cultureclip.core.errors import InputError
from cultureclip.core.io import append_jsonl, atomic_write_json, read_jsonl, stable_hash


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: a work item belongs to it iff hash(root key) % count == index."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        if not text:
            return cls()
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise InputError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
        if count < 1 or not 0 <= index < count:
            raise InputError(f"--shard {text}: need 0 <= i < n")
        return cls(index, count)

    @property
    def tag(self) -> str | None:
        return None if self.count == 1 else f"shard-{self.index}-of-{self.count}"

    def owns(self, root_key: str) -> bool:
        # Sharding by the root item (the country x category cell or corpus record) keeps a
        # concept's whole lineage (twin, captions, images, judgement) in one shard.
        return self.count == 1 or int(stable_hash("shard", root_key), 16) % self.count == self.index


def changed_fields(
    stored: Mapping[str, Any] | None, wanted: Mapping[str, Any], *, shared_only: bool = False
) -> list[str]:
    """The top-level fields two identities disagree on; every field when nothing was stored.

    ``shared_only``: a field only one side has is no difference (an output written by a
    version that did not record it yet stays reusable).
    """
    if not stored:
        return sorted(wanted) or ["(nothing stored)"]
    names = set(stored) & set(wanted) if shared_only else set(stored) | set(wanted)
    return sorted(name for name in names if stored.get(name) != wanted.get(name))


def _files(work_dir: Path, stem: str) -> list[Path]:
    return sorted({*work_dir.glob(f"{stem}.jsonl"), *work_dir.glob(f"{stem}.*.jsonl")})


class ResultStore:
    """Finished items of one stage, keyed by item key; appends go to this writer's own file."""

    def __init__(self, work_dir: str | Path, stage: str, writer: str | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.stage = stage
        self.path = self.work_dir / (f"{stage}.{writer}.jsonl" if writer else f"{stage}.jsonl")
        self._records: dict[str, dict[str, Any]] = {}
        # Stages append from worker threads (so an fsync never stalls the event loop).
        self._lock = threading.Lock()
        self.reload()

    def reload(self) -> None:
        self._records = {}
        for path in _files(self.work_dir, self.stage):
            # A line another version or a cut write corrupted is reported and redone.
            for record in read_jsonl(path, on_error="skip"):
                # The first copy wins: a key written twice (two shards sharing a side) is one item.
                self._records.setdefault(record["key"], record)

    def __contains__(self, key: object) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._records.get(key)

    def records(self) -> list[dict[str, Any]]:
        return [self._records[k] for k in sorted(self._records)]

    def add(self, record: dict[str, Any]) -> None:
        if "key" not in record:
            raise ValueError("a stored record needs a 'key'")
        with self._lock:
            append_jsonl(self.path, [record])
            self._records.setdefault(record["key"], record)


class FailureLog:
    """Append-only log of items that failed (bad answers with their raw text, render errors)."""

    def __init__(self, work_dir: str | Path, writer: str | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.path = self.work_dir / (f"failures.{writer}.jsonl" if writer else "failures.jsonl")
        self._lock = threading.Lock()

    def add(
        self,
        stage: str,
        key: str,
        error: str,
        *,
        raw: Iterable[str] = (),
        item: dict[str, Any] | None = None,
        dropped: Iterable[dict[str, Any]] = (),
    ) -> None:
        record = {
            "stage": stage,
            "key": key,
            "error": error,
            "raw": list(raw),
            "item": item or {},
            "dropped": list(dropped),
            "time": time.time(),
        }
        with self._lock:
            append_jsonl(self.path, [record])

    def add_dropped(
        self,
        stage: str,
        key: str,
        dropped: list[dict[str, Any]],
        *,
        raw: Iterable[str] = (),
        item: dict[str, Any] | None = None,
    ) -> None:
        """What the answers of an item that got its result dropped, and why (``dropped``
        items ``{"attempt", "item", "reason"}``). Not an open failure: the item has a result."""
        if dropped:
            error = f"kept the valid part; dropped {len(dropped)} item(s) or answer(s)"
            self.add(stage, key, error, raw=raw, item=item, dropped=dropped)


def open_failures(work_dir: str | Path) -> list[dict[str, Any]]:
    """The latest failure of every item that has not succeeded since."""
    work_dir = Path(work_dir)
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for path in _files(work_dir, "failures"):
        for record in read_jsonl(path, on_error="skip"):
            latest[(record["stage"], record["key"])] = record
    stores: dict[str, ResultStore] = {}
    still_open = []
    for (stage, key), record in sorted(latest.items()):
        store = stores.setdefault(stage, ResultStore(work_dir, stage))
        if key not in store:
            still_open.append(record)
    return still_open


def write_failure_report(work_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Writes ``failures.jsonl`` (open failures, raw answers included) and ``failures_summary.json``."""
    from cultureclip.core.io import write_jsonl

    failures = open_failures(work_dir)
    summary = {
        "open_failures": len(failures),
        "by_stage": dict(Counter(failure["stage"] for failure in failures)),
        "items": [
            {
                "stage": f["stage"],
                "key": f["key"],
                "error": f["error"][:500],
                "item": f.get("item", {}),
            }
            for f in failures
        ],
    }
    write_jsonl(Path(out_dir) / "failures.jsonl", failures)
    atomic_write_json(Path(out_dir) / "failures_summary.json", summary)
    return summary
