"""Result files: ``<out>/<benchmark>/<model slug>/result.json`` (:class:`EvalResult`), with
``predictions.jsonl`` and ``config.yaml`` beside it (docs/eval.md, "Results"). A stored
result is reused only when its ``key`` (the model's weights, the data's bytes, split,
options, protocol: ``cultureclip.core.identity``) is the same; ``identity`` is its digest."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, computed_field, model_validator

from cultureclip.core.errors import InputError, MissingInputError
from cultureclip.core.io import atomic_write_json, read_json, read_jsonl

RESULT_NAME = "result.json"
PREDICTIONS_NAME = "predictions.jsonl"
#: bumped whenever scoring changes so that results computed before are not reused
PROTOCOL_VERSION = 2
#: the shape of result.json; 1: counts inside ``metrics`` (``n_failed``…), ``n``/``n_skipped``
SCHEMA_VERSION = 2
#: where the first shape kept each count
_V1_COUNTS = {"n_failed": "failed", "n_unparsed": "refused", "n_judge_failed": "judge_failed"}


class NewerResultError(InputError):
    """A result file written by a newer cultureclip (never overwritten by an older one)."""


class BaselineComparison(BaseModel):
    """The same benchmark on the base model: its metrics and ``delta = model − baseline``."""

    model: str
    metrics: dict[str, float]
    delta: dict[str, float]


class Counts(BaseModel):
    #: scored units (items, images, text queries)
    items: int = 0
    #: malformed records and unreadable images, left out of every metric
    skipped: int = 0
    #: answers lost to server errors or timeouts (wrong in the metrics; a rerun asks again)
    failed: int = 0
    #: replies with no readable answer (wrong in the metrics)
    refused: int = 0
    #: items whose answer the release withholds (not scored)
    hidden: int = 0
    #: verdicts the open-ended judge could not give
    judge_failed: int = 0
    #: ids the release reused for different items, kept apart with a suffix (``q1#2``)
    ids_suffixed: int = 0
    #: exact duplicate rows of the release, dropped
    duplicates_dropped: int = 0


class EvalResult(BaseModel):
    schema_version: int = SCHEMA_VERSION
    benchmark: str
    model: str
    task: str
    metrics: dict[str, float]
    counts: Counts = Field(default_factory=Counts)
    per_group: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)
    skipped: list[str] = Field(default_factory=list, description="malformed items (first 100)")
    config: dict[str, Any] = Field(default_factory=dict)
    predictions_file: str = PREDICTIONS_NAME
    baseline: BaselineComparison | None = None
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    seconds: float = 0.0
    #: the benchmark's data (path or hub name) as given
    data: str = ""
    #: the main metric of a uniform random guess (percent); None where it has none
    chance: float | None = None
    #: what decides the result; a stored result is reused only on equality
    key: dict[str, Any] = Field(default_factory=dict)
    #: a short digest of ``key`` (the content the result was made from); "" in results of a
    #: version that did not hash content, which are recomputed, never reused
    identity: str = ""

    # where the result was read from / written to, and whether it was reused (not serialised)
    _path: Path | None = None
    _reused: bool = False

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "schema_version" in data or "counts" in data:
            return data
        data = dict(data)  # the first shape: counts inside metrics, n and n_skipped
        metrics = dict(data.get("metrics") or {})
        counts = {new: int(metrics.pop(old)) for old, new in _V1_COUNTS.items() if old in metrics}
        counts.update(items=data.pop("n", 0), skipped=data.pop("n_skipped", 0))
        return {**data, "schema_version": SCHEMA_VERSION, "metrics": metrics, "counts": counts}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def n(self) -> int:
        """``counts.items``, written too for readers of the first shape."""
        return self.counts.items

    @computed_field  # type: ignore[prop-decorator]
    @property
    def n_skipped(self) -> int:
        return self.counts.skipped

    @property
    def reused(self) -> bool:
        return self._reused

    @property
    def path(self) -> Path | None:
        return self._path

    def predictions(self) -> list[dict[str, Any]]:
        """The per-item prediction records (needs a result loaded from or saved to disk)."""
        if self._path is None:
            raise ValueError("this result has no file; save it first")
        return read_jsonl(self._path.parent / self.predictions_file)

    def save(self, directory: Path) -> Path:
        path = atomic_write_json(directory / RESULT_NAME, self.model_dump(mode="json"))
        self._path = path
        return path


def load_result(path: str | Path) -> EvalResult:
    """Reads a ``result.json`` (or a directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULT_NAME
    if not path.exists():
        raise MissingInputError(f"no result file at {path}")
    data = read_json(path)
    version = data.get("schema_version", 1) if isinstance(data, dict) else None
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise NewerResultError(
            f"{path}: result schema version {version} is newer than this cultureclip reads "
            f"({SCHEMA_VERSION}); upgrade cultureclip to read it"
        )
    result = EvalResult.model_validate(data)
    result._path = path
    return result


def find_results(paths: list[str | Path] | tuple[str | Path, ...]) -> list[Path]:
    """Every ``result.json`` under the given directories (or the files themselves), sorted."""
    found: list[Path] = []
    for entry in paths:
        entry = Path(entry)
        if entry.is_file():
            found.append(entry)
        elif entry.is_dir():
            found.extend(sorted(entry.rglob(RESULT_NAME)))
        else:
            raise MissingInputError(f"results path not found: {entry}")
    return sorted(dict.fromkeys(found))


def slugify(name: str) -> str:
    """A file-system-safe, readable slug of a model spec or name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    return slug[-120:] or "model"


def result_dir(out_dir: str | Path, benchmark: str, model_name: str) -> Path:
    return Path(out_dir) / benchmark / slugify(model_name)


_SERVED = re.compile(r"^(?P<name>[^@\s]+)@https?://\S+$")


def served_name(value: Any) -> Any:
    """``model@http://host:port/v1`` → ``model``, in strings, lists and mappings: a served
    model (``openai:<model>@<url>`` too) is known by its name, not by where it is served."""
    if isinstance(value, str):
        match = _SERVED.match(value)
        return match.group("name") if match else value
    if isinstance(value, list):
        return [served_name(v) for v in value]
    if isinstance(value, dict):
        return {k: served_name(v) for k, v in value.items()}
    return value
