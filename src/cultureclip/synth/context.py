"""Where a synth run writes and what each stage reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cultureclip.core.identity import short
from cultureclip.core.store import FailureLog, ResultStore, Shard
from cultureclip.synth.config import SynthConfig


@dataclass
class SynthContext:
    """Where a run writes, which shard it is, and which writer tag its files carry."""

    config: SynthConfig
    shard: Shard = field(default_factory=Shard)
    writer: str | None = None  # suffix of this process's store files (shard / process / task)

    @property
    def out_dir(self) -> Path:
        return Path(self.config.out_dir)

    @property
    def work_dir(self) -> Path:
        return self.out_dir / "work"

    def store(self, stage: str) -> ResultStore:
        return ResultStore(self.work_dir, stage, self.writer)

    def failures(self) -> FailureLog:
        return FailureLog(self.work_dir, self.writer)

    def llm_id(self) -> str:
        weights = self.config.llm.weights()  # a local model retrained in place is another model
        return f"{self.config.llm.backend}:{self.config.llm.model}" + (
            f"#{short(weights)}" if weights else ""
        )


@dataclass
class StageReport:
    stage: str
    total: int = 0  # items of this shard
    cached: int = 0  # already stored by an earlier run
    done: int = 0  # finished by this run
    failed: int = 0  # failed in this run (retried by the next one)
    waiting: int = 0  # not ready: an earlier stage has no result for them yet
    given: int = 0  # no work needed: taken from the input (corpus rows, photos, templates)
    skipped: int = 0  # finished without a result (e.g. no twin candidate); not retried
    notes: list[str] = field(default_factory=list)  # why a count is what it is

    def line(self) -> str:
        parts = [
            f"{count} {label}"
            for count, label in (
                (self.given, "given"),
                (self.cached, "cached"),
                (self.done, "done"),
                (self.skipped, "skipped"),
                (self.failed, "failed"),
                (self.waiting, "waiting on earlier stages"),
            )
            if count
        ]
        text = f"{self.stage}: {self.total} items" + (f" ({', '.join(parts)})" if parts else "")
        notes = self.notes or ([] if self.total or self.waiting else ["nothing to do"])
        return text + "".join(f"; {note}" for note in notes)
