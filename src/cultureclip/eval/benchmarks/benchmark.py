"""What every benchmark is: built from its data and options, ``run(model)`` returns a
:class:`BenchmarkOutput` (overall metrics plus one prediction record per scored unit,
carrying the group fields the report breaks results down by). Options are a pydantic
:class:`~cultureclip.config.Config`, so unknown options are errors.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import Field

from cultureclip.config import Config
from cultureclip.utils.io import stable_hash

T = TypeVar("T")


class BenchmarkSettings(Config):
    batch_size: int = Field(64, ge=1)
    seed: int = 42


@dataclass
class BenchmarkOutput:
    metrics: dict[str, float]
    predictions: list[dict[str, Any]]
    per_group: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    n: int = 0
    skipped: list[str] = field(default_factory=list)
    #: the main metric of a uniform random guess (percent), when it has one
    chance: float | None = None


class Benchmark(ABC):
    name: ClassVar[str] = ""
    task: ClassVar[str] = ""
    Options: ClassVar[type[BenchmarkSettings]] = BenchmarkSettings
    #: bumped when this benchmark's scoring changes (part of the result's reuse key)
    protocol_version: ClassVar[int] = 1

    def __init__(self, data: str | Path, *, split: str | None = None, **options: Any) -> None:
        self.data = data
        self.split = split
        self.options = self.Options.model_validate(options)

    @abstractmethod
    def run(
        self, model: Any, *, work_dir: Path | None = None, progress: bool = True
    ) -> BenchmarkOutput:
        """Scores ``model`` (a :class:`VisionLanguageModel`, or a generative model if supported)."""

    def prepare(self) -> None:
        """Reads and validates the data (called before the model loads; errors come early)."""
        return None

    def config(self) -> dict[str, Any]:
        return {"data": str(self.data), "split": self.split, **self.options.model_dump(mode="json")}


def batched(sequence: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(sequence), size):
        yield sequence[start : start + size]


def seeded_rng(seed: int, *key: Any) -> random.Random:
    """A random generator that depends only on the seed and ``key`` (not on item order)."""
    return random.Random(stable_hash(seed, *key))
