"""Scorers: how a benchmark's items and a model become numbers, one file each in
:data:`SCORERS` (plugins: ``cultureclip.benchmarks`` entry points); a spec names one.
:meth:`Scorer.prepare` reads and checks the data before any model loads."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from cultureclip.core.config import Config
from cultureclip.core.registry import Registry

if TYPE_CHECKING:
    from cultureclip.eval.spec import Benchmark


class ScorerSettings(Config):
    """Options every scorer takes; a scorer's own ``Options`` adds to them."""

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
    #: what is not a score: answers lost to errors (``failed``), replies with no readable
    #: answer (``refused``), verdicts a judge could not give (``judge_failed``)
    counts: dict[str, int] = field(default_factory=dict)


class Scorer(ABC):
    task: ClassVar[str] = ""
    Options: ClassVar[type[ScorerSettings]] = ScorerSettings
    #: the option a spec's ``prompts.contrastive`` sets (templates per question type, …)
    prompt_option: ClassVar[str | None] = None

    def __init__(self, bench: Benchmark) -> None:
        self.bench = bench

    @property
    def options(self) -> Any:
        return self.bench.options

    def prepare(self) -> None:
        """Reads and validates the data (called before the model loads: errors come early)."""
        return None

    def image_files(self) -> list[tuple[str, Path]]:
        """The image files the items point to, as written and where they lie: part of the
        data's identity when they lie outside the data path (an annotation file's images)."""
        return []

    @abstractmethod
    def run(
        self, model: Any, *, work_dir: Path | None = None, progress: bool = True
    ) -> BenchmarkOutput:
        """Scores ``model`` (a :class:`VisionLanguageModel`, or a generative model if supported)."""


def referenced_files(images: Iterable[str | bytes], root: Path) -> list[tuple[str, Path]]:
    """``(as written, file)`` for each image given as a path that exists (relative ones start
    at ``root``); inline bytes and ``data:`` URLs are part of the data file already."""
    found = []
    for image in images:
        if isinstance(image, str) and not image.startswith("data:") and "://" not in image:
            path = root / image  # an absolute path replaces root
            if path.is_file():
                found.append((image, path))
    return found


SCORERS: Registry[type[Scorer]] = Registry(
    "scorer", package="cultureclip.eval.scorers", entry_point_group="cultureclip.benchmarks"
)
